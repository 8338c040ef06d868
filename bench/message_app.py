"""The Celery app `bench.message_cost` runs: tasks that only count, delivered as the files workers get theirs.

Broker channel, serializer, pool, concurrency and prefetch are the files workers' (celeryconfig.py);
the broker is $BENCH_BROKER_URL. `bench.noop` is one task per message; `bench.noop_batched` (when
celery-batches is installed) takes the same messages in batches of up to the prefetch limit.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

QUEUE = "bench.messages"
DONE = "bench:done"  # how many messages the tasks have run
CONCURRENCY = 16

app = Celery("bench_messages")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15"),
    broker_transport="cachetasks.celery.broker:Transport",
    task_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    result_backend=None,
    task_ignore_result=True,
    worker_send_task_events=False,
    worker_pool="threads",
    worker_concurrency=CONCURRENCY,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)
_counter = redis.Redis.from_url(app.conf.broker_url)


@app.task(name="bench.noop")
def noop(bucket: str, location: str) -> None:
    _counter.incr(DONE)


try:
    from celery_batches import Batches
except ImportError:  # optional: celery-batches 0.11 asks for Celery < 5.7, so it is installed with --no-deps
    BATCHES = False
else:
    BATCHES = True

    @app.task(base=Batches, name="bench.noop_batched", flush_every=CONCURRENCY, flush_interval=0.01)
    def noop_batched(requests: list[Any]) -> None:
        for _ in requests:  # a round trip per message, as `noop`: the difference is Celery's
            _counter.incr(DONE)
