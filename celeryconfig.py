"""Celery settings and the beat schedule for cachetasks.

The environment is read once, here, into `cachetasks_settings`; everything below derives
from it. A bad value stops the process at start with one line naming the variable.
"""

from __future__ import annotations

import os as _os
import sys as _sys

from kombu import Queue as _Queue

from cachetasks.errors import ConfigError as _ConfigError
from cachetasks.settings import COLLECT_QUEUE as _COLLECT
from cachetasks.settings import FILES_QUEUE as _FILES
from cachetasks.settings import Settings as _Settings
from cachetasks.settings import split_credentials as _split_credentials

try:
    cachetasks_settings = _Settings.from_env(_os.environ)
except _ConfigError as _exc:
    print(f"cachetasks: configuration error: {_exc}", file=_sys.stderr)
    raise SystemExit(2) from None

_s = cachetasks_settings

broker_url = _s.broker_url
if broker_url.startswith("redis://"):  # TLS and Sentinel URLs keep kombu's own transport
    broker_transport = "cachetasks.celery.broker:Transport"
broker_connection_retry_on_startup = True
# Wait for the broker as long as it takes: Celery's default of 100 attempts ends a worker after
# about 100 s of outage, and under honcho that stops every process.
broker_connection_max_retries = None
# No retry_on_timeout: kombu pipelines a batch of publishes only when a timed-out command is never replayed.
broker_transport_options = {
    "socket_timeout": _s.redis_timeout,
    "socket_connect_timeout": _s.redis_timeout,
    "health_check_interval": 10,
    "visibility_timeout": 3600,
}
redis_backend_health_check_interval = 10

# JSON only: a worker never unpickles what it finds on the queue.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

# No result backend: outcomes go to the logs and to Flower through task events.
result_backend = None
task_ignore_result = True
# Task events only while a monitor listens: Flower enables them on every worker when it starts
# (and every 5 s after, for workers that start later); `-E` turns them on from the start. They
# cost a files worker about a fifth of its CPU per small file.
worker_send_task_events = False

# Two queues so that a backlog of copies never delays `collect`. A plain
# `celery -A cachetasks worker` consumes both; the Procfile runs one worker per queue.
task_queues = (
    _Queue(_COLLECT, routing_key=_COLLECT),
    _Queue(_FILES, routing_key=_FILES),
)
task_default_queue = _FILES
task_routes = {
    "cachetasks.collect": {"queue": _COLLECT, "routing_key": _COLLECT},
    "cachetasks.cache_file": {"queue": _FILES, "routing_key": _FILES},
}

# Copies wait on storage and Redis, not on the CPU: threads, many of them.
worker_pool = "threads"
worker_concurrency = _s.concurrency
worker_prefetch_multiplier = 1
task_acks_late = False  # a lost copy is re-created by the next collect once its claim expires
# Reconnect to the broker every second after an outage, not with Celery's backoff to 30 s.
worker_consumer = "cachetasks.celery.consumer:Consumer"
# Acks are early, so there is nothing to cancel; set to silence Celery's warning at every lost connection.
worker_cancel_long_running_tasks_on_connection_loss = True

beat_schedule = {
    "collect": {
        "task": "cachetasks.collect",
        "schedule": _s.collect_interval,
        # A collect that waited this long is stale: the next one is already on its way.
        "options": {"expires": _s.collect_expires, "queue": _COLLECT},
    },
}
# RedBeat keeps the schedule in Redis behind a lock: a second beat (on another machine) waits
# as a standby and takes over within redbeat_lock_timeout of the active one dying.
beat_scheduler = "cachetasks.celery.scheduler:Scheduler"
# The password goes in the options, which Celery masks when it shows its configuration.
redbeat_redis_url, redbeat_redis_options = _split_credentials(_s.broker_url)
redbeat_key_prefix = "cachetasks:redbeat:"
redbeat_lock_timeout = 10
beat_max_loop_interval = 1
