"""The worker's broker consumer: Celery's, reconnecting every second after a lost connection.

Celery backs off 2, 4, 6 ... up to 30 s between reconnection attempts and logs each one as an
error, so a worker can sit idle for ten seconds after Redis is back. This consumer retries
every second and reports the outage once per interval; Celery's own loop then finds the
connection made.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.state import maybe_shutdown

from ..outage import OUTAGE_LOG_EVERY, OutageLog

log = logging.getLogger(__name__)

RECONNECT_EVERY = 1.0


class Consumer(CeleryConsumer):  # type: ignore[misc]  # Celery ships no type hints
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outages = OutageLog(
            log,
            "worker cannot reach the broker, retrying every second",
            "worker reached the broker again",
            OUTAGE_LOG_EVERY,
        )
        super().__init__(*args, **kwargs)

    def ensure_connected(self, conn: Any) -> Any:
        if not self.first_connection_attempt and self.app.conf.broker_connection_retry:
            conn.ensure_connection(
                lambda exc, _interval: self._outages.failed(exc),
                self.app.conf.broker_connection_max_retries,
                interval_start=RECONNECT_EVERY,
                interval_step=0,
                interval_max=RECONNECT_EVERY,
                callback=maybe_shutdown,
            )
            self._outages.succeeded()
        return super().ensure_connected(conn)
