"""What the service is doing right now: `python -m cachetasks status`."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import time
from collections.abc import Iterable

import redis
import sqlalchemy as sa

from .. import catalog
from ..cache.keys import HELD, INFLIGHT, LAST_COLLECT, OWNED, SKIP
from ..ref import FileRef
from ..settings import COLLECT_QUEUE, FILES_QUEUE, Settings

# KEYS: OWNED, then the cache key of each file. ARGV: INFLIGHT prefix, SKIP prefix. Read-only.
_INSPECT = """
local out = {}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 then out[#out + 1] = 'cached'
  elseif redis.call('EXISTS', ARGV[1] .. key) == 1 then out[#out + 1] = 'in-flight'
  else
    local why = redis.call('GET', ARGV[2] .. key)
    if why then out[#out + 1] = 'skipped:' .. why
    elseif tonumber(redis.call('ZSCORE', KEYS[1], key) or 0) > now then out[#out + 1] = 'evicted'
    else out[#out + 1] = 'uncached' end
  end
end
return out
"""


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
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def gather(engine: sa.Engine, cache: redis.Redis, broker: redis.Redis, settings: Settings) -> Status:
    started = time.perf_counter()
    seen = catalog.first_seen(engine, window_seconds=settings.ongoing_window, sql=settings.ongoing_sql)
    states = _inspect(cache, list(seen))
    status = Status(ongoing=len(seen), states=dict(collections.Counter(states.values())))
    waiting = [(ms, ref) for ref, ms in seen.items() if ms is not None and states[ref] in ("uncached", "in-flight")]
    if waiting:
        ms, ref = min(waiting)
        status.oldest_uncached, status.oldest_uncached_age = ref.key, round(time.time() - ms / 1000, 1)
    status.held_bytes = int(cache.get(HELD) or 0)
    last = cache.get(LAST_COLLECT)
    if last is not None:
        status.last_collect_age = round(time.time() - float(last), 1)
        status.beat_recent = status.last_collect_age <= max(5.0, 5 * settings.collect_interval)
    status.queues = {q: int(broker.llen(q)) for q in (COLLECT_QUEUE, FILES_QUEUE)}
    status.seconds = round(time.perf_counter() - started, 3)
    return status


def _inspect(client: redis.Redis, refs: Iterable[FileRef]) -> dict[FileRef, str]:
    script = client.register_script(_INSPECT)
    states: dict[FileRef, str] = {}
    it = iter(refs)
    while chunk := list(itertools.islice(it, 5000)):
        keys = [OWNED, *(ref.key for ref in chunk)]
        for ref, state in zip(chunk, script(keys=keys, args=[INFLIGHT, SKIP]), strict=True):
            states[ref] = state.decode() if isinstance(state, bytes) else str(state)
    return states


def render(status: Status) -> str:
    rows: list[tuple[str, str]] = [("ongoing files", f"{status.ongoing:,}")]
    for state in ("cached", "in-flight", "uncached", "evicted"):
        rows.append((f"  {state}", f"{status.states.get(state, 0):,}"))
    for state, count in sorted(status.states.items()):
        if state.startswith("skipped:"):
            rows.append((f"  skipped ({state.split(':', 1)[1]})", f"{count:,}"))
    rows.append(("bytes held", f"{status.held_bytes:,}"))
    if status.oldest_uncached is not None:
        rows.append(("oldest uncached", f"{status.oldest_uncached} ({status.oldest_uncached_age:g} s)"))
    for queue, length in status.queues.items():
        rows.append((f"queue {queue}", f"{length:,}"))
    if status.last_collect_age is None:
        rows.append(("last collect", "never (is beat running?)"))
    else:
        verdict = "beat is firing" if status.beat_recent else "beat looks stopped"
        rows.append(("last collect", f"{status.last_collect_age:g} s ago ({verdict})"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
