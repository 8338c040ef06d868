"""What the service is doing right now: `python -m cachetasks status`."""

from __future__ import annotations

import collections
import dataclasses
import time

import redis
import sqlalchemy as sa

from .. import catalog, listener
from ..cache import Cache, FileState
from ..cache.keys import METRICS
from ..settings import COLLECT_QUEUE, FILES_QUEUE, Settings


@dataclasses.dataclass
class Status:
    ongoing: int = 0
    states: dict[str, int] = dataclasses.field(default_factory=dict)
    held_bytes: int = 0
    oldest_uncached: str | None = None
    oldest_uncached_age: float | None = None
    queues: dict[str, int] = dataclasses.field(default_factory=dict)
    last_collect_age: float | None = None
    beat_recent: bool = False
    listeners: list[dict[str, object]] = dataclasses.field(default_factory=list)  # node, role, streams
    listener_files: int = 0  # copies the listener enqueued, since the counters began
    collect_caught: int = 0  # copies collect enqueued for files the listener had not claimed
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


WAITING = (FileState.UNCACHED, FileState.IN_FLIGHT)


def gather(engine: sa.Engine, cache: Cache, broker: redis.Redis, settings: Settings) -> Status:
    started = time.perf_counter()
    seen = catalog.first_seen(engine, window_seconds=settings.ongoing_window, sql=settings.ongoing_sql)
    states = cache.inspect(seen)
    status = Status(ongoing=len(seen), states=dict(collections.Counter(states.values())))
    waiting = [(ms, ref) for ref, ms in seen.items() if ms is not None and states[ref] in WAITING]
    if waiting:
        ms, ref = min(waiting)
        status.oldest_uncached, status.oldest_uncached_age = ref.shown, round(time.time() - ms / 1000, 1)
    status.held_bytes = cache.stored_bytes()
    last = cache.last_collected()
    if last is not None:
        status.last_collect_age = round(time.time() - last, 1)
        status.beat_recent = status.last_collect_age <= settings.collect_expires
    status.queues = {q: int(broker.llen(q)) for q in (COLLECT_QUEUE, FILES_QUEUE)}
    status.listeners = [
        {"node": p.node, "role": str(p.role), "streams": list(p.streams)} for p in listener.running(cache.client)
    ]
    files, caught = cache.client.hmget(METRICS, ["listener:files", "caught"])
    status.listener_files, status.collect_caught = int(files or 0), int(caught or 0)
    status.seconds = round(time.perf_counter() - started, 3)
    return status


def render(status: Status) -> str:
    rows: list[tuple[str, str]] = [("ongoing files", f"{status.ongoing:,}")]
    for state in (FileState.CACHED, FileState.IN_FLIGHT, FileState.UNCACHED, FileState.EVICTED):
        rows.append((f"  {state}", f"{status.states.get(state, 0):,}"))
    for name, count in sorted(status.states.items()):
        if name.startswith(f"{FileState.SKIPPED}:"):
            rows.append((f"  {FileState.SKIPPED} ({name.split(':', 1)[1]})", f"{count:,}"))
    rows.append(("bytes held", f"{status.held_bytes:,}"))
    if status.oldest_uncached is not None:
        rows.append(("oldest uncached", f"{status.oldest_uncached} ({status.oldest_uncached_age:g} s)"))
    for queue, length in status.queues.items():
        rows.append((f"queue {queue}", f"{length:,}"))
    rows.append(("listener", _listeners(status.listeners)))
    rows.append(("  files it enqueued", f"{status.listener_files:,}"))
    rows.append(("  files collect caught", f"{status.collect_caught:,}"))
    if status.last_collect_age is None:
        rows.append(("last collect", "never (is beat running?)"))
    else:
        verdict = "beat is firing" if status.beat_recent else "beat looks stopped"
        rows.append(("last collect", f"{status.last_collect_age:g} s ago ({verdict})"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _listeners(listeners: list[dict[str, object]]) -> str:
    """'active on NODE (streams)', then the standbys; or why there is none at work."""
    if not listeners:
        return "not running (collect alone caches files)"
    said: list[str] = []
    for seen in listeners:
        node, role, streams = seen["node"], seen["role"], seen["streams"]
        if role == listener.Role.ACTIVE:
            names = ", ".join(map(str, streams)) if isinstance(streams, list) and streams else "no RAGFlow stream yet"
            said.insert(0, f"active on {node} ({names})")
        else:
            said.append(f"{role} on {node}")
    return "; ".join(said)
