"""cachetasks: keep the files of in-progress document-processing tasks hot in Redis."""

from __future__ import annotations

from . import tasks  # registers the tasks with `app`
from .app import app

__all__ = ["app", "tasks"]
