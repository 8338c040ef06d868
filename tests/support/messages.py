"""Put messages on the service's queues by hand: through its own Celery app, or raw, bytes and headers as given."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import kombu

from testbed.processes import REPO, service_env

_SEND = """
import json, sys
from cachetasks import app
for name, args, kwargs, task_id in json.load(sys.stdin):
    app.send_task(name, args=args, kwargs=kwargs, task_id=task_id)
"""


def send_tasks(settings: Mapping[str, str], messages: Sequence[tuple[str, Any, Any, str]]) -> None:
    """Send (task name, args, kwargs, task id) with the service's own app and configuration, from a process
    of its own (as `celery call` would), so routing and serialization are the service's."""
    subprocess.run(
        [sys.executable, "-c", _SEND],
        input=json.dumps(list(messages)).encode(),
        cwd=REPO,
        env=service_env(settings),
        check=True,
        timeout=60,
        capture_output=True,
    )


def task_headers(task: str, task_id: str | None = None) -> dict[str, Any]:
    """The headers of a Celery protocol 2 message for `task`."""
    task_id = task_id or str(uuid.uuid4())
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "shadow": None,
        "eta": None,
        "expires": None,
        "retries": 0,
        "timelimit": [None, None],
        "argsrepr": "(...)",
        "kwargsrepr": "{}",
        "origin": "tests",
        "ignore_result": True,
    }


def publish_raw(broker_url: str, queue: str, body: bytes, *, content_type: str, headers: Mapping[str, Any]) -> None:
    """Publish `body` as it is on `queue` (through the default exchange), whatever its content type."""
    with kombu.Connection(broker_url) as conn:
        producer = conn.Producer()
        producer.publish(
            body,
            routing_key=queue,
            exchange="",
            content_type=content_type,
            content_encoding="binary",
            headers=dict(headers),
            serializer=None,
        )
