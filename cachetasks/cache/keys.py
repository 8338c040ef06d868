"""Names of the keys cachetasks keeps for itself, all under one prefix.

Cached files themselves live at exactly `"{bucket}/{location}"` (`ref.cache_key`); nothing
here can be mistaken for one, and nothing outside this prefix is ever written but them.
"""

from __future__ import annotations

from ..ref import PREFIX as PREFIX

INFLIGHT = PREFIX + "inflight:"  # + cache key; value QUEUED, or the id of the task copying it
QUEUED = "queued"  # a claim taken by the collect that enqueued the copy (written as such by scan.lua)
QUEUED_COPIES = PREFIX + "queued-copies"  # how many copies collects have ever queued: the number of the last
WAITING = PREFIX + "waiting"  # sorted set: cache key -> the number of its copy, while its message may still wait
WAITING_DUE = PREFIX + "waiting-due"  # sorted set: cache key -> when (ms) its waiting copy's claim is renewed
SKIP = PREFIX + "skip:"  # + cache key; value: why the file is not tried again for a while
ROOM = PREFIX + "room:"  # + cache key; value: the bytes a file skipped for lack of room needs
PROMISED = PREFIX + "promised"  # hash: cache key -> bytes of Redis's memory promised to the copy claiming it
TMP = PREFIX + "tmp:"  # + random; a value being streamed in, renamed into place when complete
OWNED = PREFIX + "owned"  # sorted set: cache keys this service wrote, scored by expiry (ms)
SIZES = PREFIX + "sizes"  # hash: cache key -> bytes, for keys in OWNED and reservations
HELD = PREFIX + "held-bytes"  # the sum of SIZES: what the cache holds (or is about to)
SOURCES = PREFIX + "sources"  # hash: cache key -> "document<TAB>version" its value was copied from
WANTED = PREFIX + "wanted"  # hash: cache key -> the document a claimed copy is for ('' if unknown)
EVICTED = PREFIX + "evicted"  # sorted set: keys Redis evicted, scored by the end of their TTL period (ms)
EVICTIONS = PREFIX + "evictions"  # Redis's evicted_keys counter at the last full collect
COLLECT_LOCK = PREFIX + "collect-lock"
LAST_COLLECT = PREFIX + "last-collect"  # unix time of the last finished collect
LAST_REPORT = PREFIX + "last-report"  # hash: the last full collect's counts
METRICS = PREFIX + "metrics"  # hash: counters and histogram buckets for Prometheus
LISTENER_LOCK = PREFIX + "listener-lock"  # the lease of the one listener that reads RAGFlow's streams
LISTENER_CURSORS = PREFIX + "listener-cursors"  # hash: stream -> the id of the last entry the listener handled
LISTENERS = PREFIX + "listeners"  # hash: node -> what its listener process last said it was doing, and when


def inflight_key(key: str) -> str:
    return INFLIGHT + key


def skip_key(key: str) -> str:
    return SKIP + key


def room_key(key: str) -> str:
    return ROOM + key
