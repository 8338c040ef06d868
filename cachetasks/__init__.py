"""cachetasks: keep the files of in-progress document-processing tasks hot in Redis.

`celery -A cachetasks` finds the Celery app as `cachetasks.app`. It is loaded on first use,
so that consumers importing `cachetasks.reader` do not pay for Celery.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from .celery import tasks  # noqa: F401 -- registers the tasks with the app
        from .celery.app import app

        return app
    raise AttributeError(f"module 'cachetasks' has no attribute {name!r}")
