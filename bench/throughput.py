"""Throughput scenarios (1-4): the same files copied by the limit, the original and the service.

Each figure is the time from the moment the documents become ongoing (their rows committed,
with the copier already running) until every key exists, turned into MB/s and files/s.
The limit has no "becoming ongoing": it is timed from its first read to its last SET.
Between runs the rows are deleted, the copier is left to go idle and the cache DB is flushed.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench import limit
from bench.lab import REPO, Lab, clear_documents, file_name, insert_documents, lab, put_local, put_s3
from bench.measure import CpuMeter, Summary, cpu_line, header, median, median_cpu, note, ratio, table, verdict
from cachetasks.settings import COLLECT_QUEUE, FILES_QUEUE, Settings
from testbed.servers import stop_process, wait_until

CONCURRENCY = Settings().concurrency  # the shipped default the service runs with


@dataclass
class Target:
    reference: str  # "limit" or "original"
    factor: float


@dataclass
class Scenario:
    number: int
    title: str
    storage: str  # "s3" or "local"
    files: int
    size: int
    unit: str  # "MB/s" or "files/s"
    targets: list[Target]
    latency: float = 0.0  # seconds added to each storage request by a proxy process
    original_files: int | None = None  # a subset for a slow original
    runs: int = 3
    notes: list[str] = field(default_factory=list)


@dataclass
class Figures:
    name: str
    files: int
    bytes: int
    seconds: list[float] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)
    first_key: list[float] = field(default_factory=list)  # seconds from the commit to the first key, per run

    @property
    def median_s(self) -> float:
        return median(self.seconds)

    def rate(self, unit: str) -> float:
        per_second = self.files / self.median_s
        return self.bytes / self.median_s / 1e6 if unit == "MB/s" else per_second


# How the service's processes are laid out: the Procfile's (files workers, a collector of its own
# and beat) or the plain command (one worker consuming both queues, and beat).
LAYOUTS = ("procfile", "plain")
PROCFILE_FILES_WORKERS = 2  # the Procfile's worker and worker2


def main(scenario: Scenario) -> None:
    parser = argparse.ArgumentParser(description=f"Scenario {scenario.number}: {scenario.title}")
    parser.add_argument("--runs", type=int, default=scenario.runs, help="runs per figure (median)")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="procfile",
        help="procfile: files workers + collector, as the Procfile runs them; plain: one `celery worker` for both "
        "queues",
    )
    parser.add_argument(
        "--files-workers", type=int, default=PROCFILE_FILES_WORKERS, help="files worker processes (procfile layout)"
    )
    parser.add_argument(
        "--worker-args",
        default="",
        help="extra `celery worker` options for the files workers, to measure a lever: "
        "'--pool gevent -c 64', '--prefetch-multiplier 8', '-E' (task events from the start)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="an extra variable for the service's processes"
    )
    args = parser.parse_args()
    scenario.runs = args.runs
    lever = Lever(shlex.split(args.worker_args), dict(item.split("=", 1) for item in args.env))
    run(scenario, layout=args.layout, files_workers=args.files_workers, lever=lever)


@dataclass(frozen=True)
class Lever:
    """What a run changes in the service's files workers: extra options and environment."""

    worker_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [" ".join(self.worker_args)] + [f"{k}={v}" for k, v in self.env.items()]
        return ", ".join(p for p in parts if p)


def run(
    sc: Scenario, *, layout: str = "procfile", files_workers: int = PROCFILE_FILES_WORKERS, lever: Lever | None = None
) -> None:
    lever = lever or Lever()
    header(sc.number, sc.title, sc.runs)
    if lever.describe():
        note(f"files workers run with: {lever.describe()}")
    for line in sc.notes:
        note(line)
    with lab(s3=sc.storage == "s3") as the_lab:
        bucket = "kb" + uuid.uuid4().hex[:12]
        names = [file_name("docs/f", i) for i in range(1, sc.files + 1)]
        started = time.perf_counter()
        if sc.storage == "s3":
            put_s3(the_lab.s3_client(), bucket, names, sc.size)
        else:
            put_local(the_lab.local_root, bucket, names, sc.size)
        note(f"setup: {sc.files} files x {sc.size // 1024} KiB in {sc.storage} in {time.perf_counter() - started:.1f}s")
        pids = {"redis": _pid(the_lab.redis_server.proc)}
        endpoint = None
        if sc.storage == "s3":
            assert the_lab.s3_server is not None
            pids["moto"] = _pid(the_lab.s3_server.proc)
            if sc.latency:
                endpoint, pids["proxy"] = the_lab.start_proxy(sc.latency)
        results = [
            _limit(the_lab, sc, bucket, names, endpoint, pids),
            _original(the_lab, sc, bucket, names, endpoint, pids),
            _service(the_lab, sc, bucket, names, endpoint, pids, layout, files_workers, lever),
        ]
    _report(sc, results)


def _pid(proc: subprocess.Popen[bytes] | None) -> int:
    assert proc is not None
    return proc.pid


def _keys(bucket: str, names: list[str]) -> list[str]:
    return [f"{bucket}/{name}" for name in names]


def _limit(
    lab_: Lab, sc: Scenario, bucket: str, names: list[str], endpoint: str | None, pids: dict[str, int]
) -> Figures:
    if sc.storage == "s3":
        read = limit.s3_reader(lab_.s3_client(endpoint, pool=CONCURRENCY + 4))
    else:
        read = limit.local_reader(lab_.local_root)
    figures = Figures(f"limit (T={CONCURRENCY})", len(names), len(names) * sc.size)
    meter = CpuMeter(pids, database=lab_.pg_name)
    client = lab_.cache
    pairs = [(bucket, name) for name in names]
    for _ in range(sc.runs):
        lab_.flush_cache()
        before = meter.snapshot()
        figures.seconds.append(limit.copy_all(read, client, pairs, CONCURRENCY))
        figures.cpu.append(CpuMeter.diff(before, meter.snapshot()))
        assert lab_.keys_present(_keys(bucket, names)) == len(names)
    return figures


def _original(
    lab_: Lab, sc: Scenario, bucket: str, names: list[str], endpoint: str | None, pids: dict[str, int]
) -> Figures:
    names = names[: sc.original_files or len(names)]
    status = lab_.workdir / "original.status"
    env = {**lab_.env(sc.storage, s3_endpoint=endpoint), "BENCH_ORIGINAL_STATUS": str(status)}
    proc = start_original(lab_, env)
    figures = Figures("original", len(names), len(names) * sc.size)
    meter = CpuMeter({**pids, "original": proc.pid}, database=lab_.pg_name)
    try:
        wait_until(status.exists, timeout=30, what="the original's first cycle")
        for _ in range(sc.runs):
            clear_documents(lab_.engine)
            wait_original_idle(status)
            lab_.flush_cache()
            _timed_run(lab_, meter, bucket, names, sc.size, figures)
    finally:
        stop_process(proc, grace=5)
    return figures


def start_original(lab_: Lab, env: dict[str, str]) -> subprocess.Popen[bytes]:
    from testbed.processes import service_env

    log = open(lab_.workdir / "original.log", "ab")  # noqa: SIM115 -- handed to the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.original"],
        cwd=REPO,
        env=service_env(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    lab_.started.append(proc)
    return proc


def wait_original_idle(status: Path, *, timeout: float = 120) -> None:
    """Wait for a whole cycle of the original that started after the rows were removed."""
    first = int(status.read_text().split()[0])

    def idle() -> bool:
        cycles, pairs = (int(x) for x in status.read_text().split())
        return cycles >= first + 2 and pairs == 0

    wait_until(idle, timeout=timeout, interval=0.05, what="the original to go idle")


def _service(
    lab_: Lab,
    sc: Scenario,
    bucket: str,
    names: list[str],
    endpoint: str | None,
    pids: dict[str, int],
    layout: str,
    count: int,
    lever: Lever,
) -> Figures:
    procs = lab_.processes({**lab_.env(sc.storage, s3_endpoint=endpoint), **lever.env}, f"s{sc.number}")
    if layout == "plain":
        workers = {"worker": procs.worker("worker", *lever.worker_args).pid}
        name = f"service (plain worker, threads x {CONCURRENCY})"
    else:
        workers = {
            f"files{i}": procs.worker(f"files{i}", "-Q", FILES_QUEUE, *lever.worker_args).pid for i in range(count)
        }
        workers["collector"] = procs.worker("collector", "-Q", COLLECT_QUEUE, "--pool", "solo").pid
        name = f"service ({count} x files worker, threads x {CONCURRENCY}, + collector)"
    beat = procs.beat()
    figures = Figures(name, len(names), len(names) * sc.size)
    meter = CpuMeter({**pids, **workers, "beat": beat.pid}, database=lab_.pg_name)
    try:
        lab_.wait_collects(1, timeout=60)
        for _ in range(sc.runs):
            clear_documents(lab_.engine)
            lab_.wait_service_idle()
            lab_.flush_cache()
            _timed_run(lab_, meter, bucket, names, sc.size, figures)
            sample = f"{bucket}/{names[len(names) // 2]}"
            assert lab_.cache.strlen(sample) == sc.size and 0 < lab_.cache.ttl(sample) <= 720, sample
    finally:
        procs.stop_all()
    return figures


def _timed_run(lab_: Lab, meter: CpuMeter, bucket: str, names: list[str], size: int, figures: Figures) -> None:
    """Make the documents ongoing; time until the first key exists, and until every key does."""
    before = meter.snapshot()
    with lab_.engine.begin() as conn:
        insert_documents(conn, bucket=bucket, start=1, count=len(names), size=size)
    became_ongoing = time.perf_counter()
    first, done = lab_.wait_keys(_keys(bucket, names), timeout=600)
    figures.seconds.append(done - became_ongoing)
    figures.first_key.append(first - became_ongoing)
    figures.cpu.append(CpuMeter.diff(before, meter.snapshot()))


def _report(sc: Scenario, results: list[Figures]) -> None:
    by_name = {f.name.split(" ")[0]: f for f in results}
    service = by_name["service"]
    rows = []
    for f in results:
        rate = f.rate(sc.unit)
        rows.append(
            [
                f.name,
                f.files,
                " ".join(f"{s:.2f}" for s in f.seconds),
                round(f.median_s, 2),
                round(f.rate("MB/s"), 1),
                round(f.rate("files/s")),
                f"{ratio(service.rate(sc.unit), rate):.2f}x",
            ]
        )
    print(table(["implementation", "files", "runs (s)", "median s", "MB/s", "files/s", "service / this"], rows))
    checks = []
    for t in sc.targets:
        got = ratio(service.rate(sc.unit), by_name[t.reference].rate(sc.unit))
        checks.append((t, got, got >= t.factor))
        note(f"service / {t.reference} = {got:.2f}x ({sc.unit}); target >= {t.factor}x: {verdict(got >= t.factor)}")
    for f in results:
        note(f"{f.name}: " + cpu_line(median_cpu(f.cpu), f.median_s))
    for f in results:
        if f.first_key:  # the limit starts at its first read: it waits for nothing
            first = median(f.first_key)
            runs = " ".join(f"{s:.2f}" for s in f.first_key)
            after = (f.files - 1) / max(f.median_s - first, 1e-3)
            note(f"{f.name}: first key {first:.2f} s after the commit (runs {runs}), then {after:.0f} files/s")
    # The CPU of the service's own processes against the limit's copy (the bench process), per file.
    own = sum(v for k, v in median_cpu(service.cpu).items() if k.startswith(("files", "worker", "collector", "beat")))
    plain = median_cpu(by_name["limit"].cpu).get("bench", 0.0)
    note(
        f"CPU per file: service {own / service.files * 1000:.2f} ms, limit {plain / service.files * 1000:.2f} ms: "
        f"{ratio(own, plain):.2f}x"
    )
    Summary(
        scenario=f"{sc.number}. {sc.title}",
        measure=sc.unit,
        service=f"{service.rate(sc.unit):.1f}",
        original=f"{by_name['original'].rate(sc.unit):.1f}",
        limit=f"{by_name['limit'].rate(sc.unit):.1f}",
        target=", ".join(f">= {t.factor}x {t.reference} (got {got:.2f}x)" for t, got, _ in checks),
        met=all(ok for _, _, ok in checks),
    ).emit()
