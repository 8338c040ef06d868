"""kombu's Redis transport, with one client object per channel instead of one per operation.

kombu builds a fresh `redis.Redis` for every acknowledgement, publish and queue operation
(~3 per task). The client is only a front for the channel's connection pool, but building one
fills its table of ~170 response callbacks: about a fifth of a worker's CPU per small file. A
client is thread-safe and holds no connection of its own, so one per channel serves them all.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the event loop's client, made once per channel by kombu itself
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]  # kombu's, untyped
        if self._sync_client is None:
            self._sync_client = super()._create_client()  # type: ignore[no-untyped-call]
        return self._sync_client


class Transport(kombu_redis.Transport):
    Channel = Channel
