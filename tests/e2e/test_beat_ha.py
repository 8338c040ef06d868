"""Two beat processes, as on two machines: one fires `collect`, the other stands by and takes over when it dies."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.ops.demo import insert_document
from testbed.processes import Processes
from testbed.servers import wait_until
from tests.support.e2e import put_local

Start = Callable[[dict[str, str]], Processes]
SENT = "Sending due task"
BEATS = ("beat-a", "beat-b")


def sent(procs: Processes, name: str) -> int:
    """How many times beat `name` has published a due task."""
    return procs.log(name).count(SENT)


def kill(procs: Processes, name: str) -> None:
    """SIGKILL a process and its group: no shutdown handler runs, no lock is released."""
    proc = procs.procs.pop(name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


@pytest.mark.slow
def test_one_of_two_beats_fires_and_the_other_takes_over_within_15_s_of_a_sigkill(
    env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache, processes: Start
) -> None:
    """Of two beats only one sends `collect`; SIGKILLed, the standby fires within 15 s and files are still cached."""
    # Given a worker and two beats on the same Redis
    procs = processes(env)
    procs.worker()
    for name in BEATS:
        procs.beat(name)
    active = wait_until(
        lambda: next((name for name in BEATS if sent(procs, name)), None), timeout=30, what="a beat firing"
    )
    standby = next(name for name in BEATS if name != active)
    # When they run side by side for 5 s
    fired_before = sent(procs, active)
    time.sleep(5)
    # Expect only the active beat to have fired, about once a second
    assert sent(procs, active) - fired_before >= 3
    assert sent(procs, standby) == 0
    assert all(procs.procs[name].poll() is None for name in BEATS), "a beat exited"
    # When the active beat is killed without a chance to release its lock
    kill(procs, str(active))
    killed_at = time.monotonic()
    # Expect the standby to take over within 15 s
    wait_until(lambda: sent(procs, standby), timeout=15, what=f"{standby} taking over")
    takeover = time.monotonic() - killed_at
    # Expect a document that becomes ongoing after the takeover to be cached
    put_local(env, "kb1", "after-takeover.txt", b"still served")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="after-takeover.txt")
    wait_until(lambda: cache.client.exists("kb1/after-takeover.txt"), timeout=5, what="the new document cached")
    assert cache.client.get("kb1/after-takeover.txt") == b"still served"
    print(f"standby took over {takeover:.1f} s after the SIGKILL")
