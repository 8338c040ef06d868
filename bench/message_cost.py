"""What delivering and running one Celery message costs a files worker, and the celery-batches lever.

    python -m bench.message_cost [--messages 4000] [--runs 3]

A worker of the files workers' make (the service's broker channel, threads x 16, prefetch 16,
events off) runs tasks that only count (`bench.message_app`): one task per message, then the
same messages taken by celery-batches in batches of 16 (one pool call per batch), if installed.
Each variant runs again with task events on (`-E`, as when Flower watches) while this script
counts the task events the worker sends, per message: what Flower can show of each message.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench.measure import NOISE, cpu_seconds, median, note, table
from bench.message_app import BATCHES, DONE, QUEUE, app
from testbed.processes import Processes, service_env
from testbed.servers import RedisServer, wait_until

VARIANTS = {"one task per message": "bench.noop", "celery-batches, 16 per batch": "bench.noop_batched"}


class EventCounter:
    """Counts the task events on the broker by type, as a monitor such as Flower receives them."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._receiver: Any = None
        self._total = -1
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with app.connection_for_read() as conn:
            self._receiver = app.events.Receiver(conn, handlers={"*": self._count})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def settled(self) -> bool:
        """True once no event arrived since the last call."""
        total = sum(self.counts.values())
        quiet, self._total = total == self._total, total
        return quiet

    def _count(self, event: dict[str, object]) -> None:
        if str(event.get("type", "")).startswith("task-"):
            self.counts[str(event["type"])] += 1

    def __enter__(self) -> EventCounter:
        self._thread.start()
        wait_until(lambda: self._receiver is not None, timeout=10, what="the event receiver")
        time.sleep(0.5)  # its queue bound before the first event
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=5)


def run(
    procs: Processes, counter: redis.Redis, task: str, messages: int, *, events: bool
) -> tuple[float, float, dict[str, float]]:
    """(wall s, worker CPU s, task events per message) for `messages` messages of `task`, counted at `counter`."""
    args = [sys.executable, "-m", "celery", "-A", "bench.message_app", "worker", "-Q", QUEUE, "-l", "WARNING"]
    args += ["--without-mingle", "--without-gossip", "-n", f"{task}@%h", *(["-E"] if events else [])]
    worker = procs.start(task, args)
    try:
        counter.delete(DONE)
        app.send_task(task, ("warm", "up"))  # the worker is up and its code paths loaded
        wait_until(lambda: counter.get(DONE) == b"1", timeout=60, what="the worker's first task")
        counter.delete(DONE)
        with EventCounter() if events else contextlib.nullcontext() as seen:
            cpu_before, started = cpu_seconds(worker.pid), time.perf_counter()
            with app.producer_or_acquire() as producer:
                for i in range(messages):
                    app.send_task(task, ("bucket", f"docs/f{i:05d}.bin"), producer=producer)
            wait_until(lambda: int(counter.get(DONE) or 0) >= messages, timeout=300, interval=0.01, what="the tasks")
            wall, cpu = time.perf_counter() - started, cpu_seconds(worker.pid) - cpu_before
            if seen is not None:  # the last events in flight
                wait_until(seen.settled, timeout=30, interval=0.5, what="the last task events")
            per_message = {kind: n / messages for kind, n in sorted(seen.counts.items())} if seen else {}
        return wall, cpu, per_message
    finally:
        procs.stop(task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"\n=== What a message costs a files worker: {args.messages} messages of a task that only counts", flush=True)
    note(NOISE.format(n=args.runs, cpus=os.cpu_count()))
    variants = dict(VARIANTS) if BATCHES else {k: v for k, v in VARIANTS.items() if "batches" not in k}
    if not BATCHES:
        note("celery-batches is not installed: pip install --no-deps celery-batches==0.11 to measure it")
    workdir = Path(tempfile.mkdtemp(prefix="cachetasks-bench-messages-"))
    server = RedisServer(workdir / "redis").start()
    app.conf.broker_url = server.url(0)
    procs = Processes(service_env({"BENCH_BROKER_URL": server.url(0)}), workdir / "logs")
    counter = server.client(0)
    rows = []
    try:
        for name, task in variants.items():
            walls, cpus = [], []
            for _ in range(args.runs):
                wall, cpu, _ = run(procs, counter, task, args.messages, events=False)
                walls.append(wall)
                cpus.append(cpu)
            _, _, events = run(procs, counter, task, args.messages, events=True)
            shown = ", ".join(f"{kind} {n:.2f}" for kind, n in events.items()) or "none"
            ms = median(cpus) / args.messages * 1000
            rows.append((name, f"{median(walls):.2f}", f"{median(cpus):.2f}", f"{ms:.3f}", shown))
    finally:
        procs.kill_all()
        counter.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(["variant", "wall s", "worker CPU s", "CPU ms per message", "task events per message (-E)"], rows))


if __name__ == "__main__":
    main()
