"""Which listener reads the streams, and what every listener process last said it was doing.

One listener per deployment holds a lease in Redis and reads; the others stand by, each taking the
lease within LEASE_SECONDS of the holder stopping or dying. Every listener process says every few
seconds what it is doing, in one hash: `status` and `listen --ping` read it.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass

import redis

from ..cache.keys import LISTENERS

LEASE_SECONDS = 10.0
SAY_EVERY = LEASE_SECONDS / 3  # the holder renews the lease this often, and every process says what it does
STALE_AFTER = 3 * SAY_EVERY + 5  # a listener that said nothing for this long is not running


class Role(enum.StrEnum):
    ACTIVE = "active"  # holds the lease and reads the streams
    STANDBY = "standby"  # another listener holds the lease
    OFF = "off"  # CACHETASKS_TASK_STREAMS=none, or CACHETASKS_ONGOING_SQL (no document to look up)


@dataclass(frozen=True)
class Presence:
    node: str
    role: Role
    streams: tuple[str, ...]  # what an active listener reads (none found yet: empty)
    at: float  # unix time it said so


def say(client: redis.Redis | redis.client.Pipeline, node: str, role: Role, streams: tuple[str, ...] = ()) -> None:
    """Record what the listener of `node` is doing now."""
    client.hset(LISTENERS, node, json.dumps({"role": role.value, "streams": list(streams), "at": time.time()}))


def leave(client: redis.Redis, node: str) -> None:
    """The listener of `node` stopped."""
    client.hdel(LISTENERS, node)


def running(client: redis.Redis, *, now: float | None = None) -> list[Presence]:
    """The listeners that said what they do within STALE_AFTER seconds, by node."""
    now = time.time() if now is None else now
    found = []
    for node, raw in client.hgetall(LISTENERS).items():
        try:
            said = json.loads(raw)
            presence = Presence(_text(node), Role(said["role"]), tuple(said["streams"]), float(said["at"]))
        except (ValueError, KeyError, TypeError):
            continue  # not written by a listener
        if now - presence.at <= STALE_AFTER:
            found.append(presence)
    return sorted(found, key=lambda p: p.node)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
