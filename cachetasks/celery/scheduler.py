"""The beat scheduler: RedBeat's, made to outlive Redis outages and to never pile up collects.

RedBeat keeps the schedule in Redis behind a lock, so a second beat waits as a standby. Two
things it does not do, which this subclass adds:

- Survive Redis going away. RedBeat extends its lock at every tick and lets the error end the
  beat process. Here a Redis error is logged once per interval and the tick retried every
  half second; once Redis answers, the lock is taken again (unless another beat took it meanwhile:
  then this one stands by) and the schedule re-installed, since a Redis that restarted empty
  has lost both.
- Not send a periodic task while its previous message still waits in its queue. Redis has no
  message TTL and `expires` only acts when a worker receives the message, so without this a
  beat running while no worker consumes fills the queue with one stale collect per second.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.exceptions import LockNotOwnedError

from ..outage import OUTAGE_LOG_EVERY, OutageLog

log = logging.getLogger(__name__)

# Seconds between ticks while Redis fails. Once it answers, the re-installed schedule sends its
# first collect an interval later: half a second here keeps the whole return within 2 s.
RETRY_EVERY = 0.5


class Scheduler(RedBeatScheduler):  # type: ignore[misc]  # redbeat ships no type hints
    lock: Any = None  # redis-py's Lock once taken

    def __init__(self, app: Celery, **kwargs: Any) -> None:
        self._outages = OutageLog(
            log, "beat cannot reach Redis, retrying twice a second", "beat reached Redis again", OUTAGE_LOG_EVERY
        )
        self._lost = False  # the lock (and maybe the schedule) must be taken again before the next tick
        self._standby = False
        self._holding_back: set[str] = set()  # entries not sent because their last message still waits
        super().__init__(app, **kwargs)

    def setup_schedule(self) -> None:
        try:
            super().setup_schedule()
        except redis.RedisError as exc:  # Redis down at start: install at the first tick that reaches it
            self._outages.failed(exc)
            self._lost = True

    def tick(self, min: Any = min, **kwargs: Any) -> float:  # Celery's signature
        try:
            if (self._lost or self.lock is None) and self.lock_key and not self._reacquire():
                return float(self.max_interval)
            interval = float(super().tick(min, **kwargs))
        except LockNotOwnedError:
            log.warning("beat lost its lock (Redis restarted or the lock expired): taking it again")
            self._lost = True
            return 0.0
        except redis.RedisError as exc:
            self._outages.failed(exc)
            self._lost = True
            return RETRY_EVERY
        self._outages.succeeded()
        return interval

    def _reacquire(self) -> bool:
        """Take the lock again and re-install the schedule; False while another beat holds the lock."""
        client = get_redis(self.app)
        lock = self.lock
        if lock is None:  # RedBeat's start-up acquisition failed (Redis was down)
            lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
            # RedBeat's extend sets the timeout instead of adding to it
            lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
            self.lock = lock
        if not lock.owned() and not lock.acquire(blocking=False):
            if not self._standby:
                log.info("beat: another beat holds the lock; standing by")
                self._standby = True
            return False
        self._standby = False
        super().setup_schedule()
        self._lost = False
        log.info("beat: holding the lock; schedule installed")
        return True

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        queue = entry.options.get("queue")
        if queue and get_redis(self.app).llen(queue):
            if advance:
                self.reserve(entry)  # due again next interval, not at every tick
            if entry.name not in self._holding_back:
                log.info("beat: not sending %s while its last message still waits in %s", entry.name, queue)
                self._holding_back.add(entry.name)
            return None
        if entry.name in self._holding_back:
            log.info("beat: %s's queue is being consumed again", entry.name)
            self._holding_back.discard(entry.name)
        return super().apply_async(entry, producer, advance, **kwargs)
