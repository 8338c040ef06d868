"""Measuring and reporting: CPU time and memory from /proc, medians, tables, the summary file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
NOISE = "median of {n} runs; this machine is small ({cpus} cores) and noisy: differences under ~15% are not significant"


# -- CPU ---------------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU of one process (plus its reaped children's, if asked)."""
    try:
        fields = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def postgres_cpu(database: str) -> float:
    """CPU of the PostgreSQL backends connected to `database` (found by their process titles).

    Other users of the shared server are left out; a backend that exits between two
    snapshots is lost, which the services' pooled connections make rare.
    """
    total = 0.0
    marker = f" {database} ".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if title.startswith(b"postgres:") and marker in title:
            total += cpu_seconds(int(entry))
    return total


class CpuMeter:
    """CPU seconds of named processes between two snapshots (this process is 'bench')."""

    def __init__(self, pids: Mapping[str, int], *, database: str | None = None) -> None:
        self.pids = dict(pids)
        self.database = database

    def snapshot(self) -> dict[str, float]:
        snap = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self.database:
            snap["postgres"] = postgres_cpu(self.database)
        times = os.times()
        snap["bench"] = times.user + times.system
        return snap

    @staticmethod
    def diff(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {name: after[name] - before.get(name, 0.0) for name in after}


def median_cpu(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    names = list(runs[0]) if runs else []
    return {name: statistics.median(r.get(name, 0.0) for r in runs) for name in names}


def cpu_line(cpu: Mapping[str, float], wall: float) -> str:
    parts = ", ".join(f"{name} {value:.2f}" for name, value in cpu.items())
    total = sum(cpu.values())
    return f"CPU s: {parts} (total {total:.2f} in {wall:.2f} s wall = {total / wall:.2f} of {os.cpu_count()} cores)"


# -- memory ------------------------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    """A `VmRSS`/`VmHWM`-style field of /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


# -- figures -----------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def header(number: int, title: str, runs: int) -> None:
    print(f"\n=== Scenario {number}: {title}", flush=True)
    print("    " + NOISE.format(n=runs, cpus=os.cpu_count()), flush=True)


def note(text: str) -> None:
    print("    " + text, flush=True)


# -- the summary run_all collects --------------------------------------------------------------------------


@dataclass
class Summary:
    scenario: str
    measure: str
    service: str
    original: str
    limit: str
    target: str
    met: bool

    def emit(self) -> None:
        """Print the verdict, and append it to $BENCH_SUMMARY_FILE for run_all."""
        print(f"    => {self.measure}: service {self.service} | target {self.target}: {verdict(self.met)}", flush=True)
        path = os.environ.get("BENCH_SUMMARY_FILE")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(asdict(self)) + "\n")


def read_summaries(path: Path) -> list[Summary]:
    if not path.exists():
        return []
    return [Summary(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def machine() -> str:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    versions = []
    for cmd in (["redis-server", "--version"], ["psql", "--version"]):
        try:
            versions.append(subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip())
        except OSError:
            versions.append(f"{cmd[0]}: not found")
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_kib // 1024} MiB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}; {'; '.join(versions)}"
    )
