"""Publish many messages for one task at once: Celery builds one, the rest are stamped from it.

`apply_async` spends about 200 us per message on option merging, routing and building the
message; a collect that finds 10,000 new files would spend two seconds on that alone. Here
Celery builds the message once (protocol 2, JSON), and each file's message is a copy with its
own id and arguments, published through one producer whose Redis commands are pipelined.

The messages go through the default exchange, which delivers to the queue named by the
routing key: the same queue `apply_async` reaches, without a lookup of the exchange's
bindings in Redis for every message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery
from celery.utils import uuid
from celery.utils.saferepr import saferepr


def publish_many(app: Celery, task_name: str, calls: Iterable[Sequence[Any]]) -> None:
    """Publish one message of `task_name` per argument tuple in `calls`."""
    task = app.tasks[task_name]
    queue = app.amqp.router.route({}, task_name, None, None, task)["queue"]
    parent = app.current_worker_task  # collect, when run by a worker: its id becomes the parent's
    parent_id = parent.request.id if parent else None
    root_id = (parent.request.root_id or parent.request.id) if parent else None
    first = uuid()
    template = app.amqp.as_task_v2(
        first,
        task_name,
        args=(),
        kwargs={},
        reply_to=app.thread_oid,
        root_id=root_id or first,
        parent_id=parent_id,
        ignore_result=task.ignore_result,
    )
    headers, properties, (_, kwargs, embed) = template.headers, template.properties, template.body
    maxsize = app.amqp.argsrepr_maxsize
    with app.producer_or_acquire() as producer, producer.batch():
        for call in calls:
            args = tuple(call)
            task_id = uuid()
            producer.publish(
                (args, kwargs, embed),
                exchange="",
                routing_key=queue.routing_key,
                serializer="json",
                headers={**headers, "id": task_id, "root_id": root_id or task_id, "argsrepr": saferepr(args, maxsize)},
                **{**properties, "correlation_id": task_id},
            )
