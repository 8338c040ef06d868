"""Run the benchmark suite (or some scenarios) and print a summary table.

    .venv/bin/python bench/run_all.py          # every scenario, ~15-20 minutes
    .venv/bin/python bench/run_all.py 1 5      # scenarios 1 and 5 only
    python -m bench                            # the same as run_all.py

Each scenario runs in its own process (`python -m bench.sN_...`), with its own servers,
database and temporary folder, all removed when it ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: `python bench/run_all.py`
    sys.path.insert(0, str(REPO))

from bench.measure import machine, read_summaries, table, verdict  # noqa: E402 -- needs the path above

SCENARIOS = {
    1: "bench.s1_s3_loopback",
    2: "bench.s2_s3_latency",
    3: "bench.s3_s3_large",
    4: "bench.s4_local",
    5: "bench.s5_collect_scale",
    6: "bench.s6_enqueue_burst",
    7: "bench.s7_time_to_cache",
    8: "bench.s8_worker_memory",
    9: "bench.s9_duplicate_reads",
    10: "bench.s10_listener",
    11: "bench.s11_status",
}


def run_scenario(module: str, summary_file: Path) -> int:
    env = {**os.environ, "BENCH_SUMMARY_FILE": str(summary_file), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the scenario got the Ctrl-C too and is cleaning up: let it finish
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", type=int, help=f"some of {sorted(SCENARIOS)}; default: all")
    args = parser.parse_args()
    chosen = args.scenarios or sorted(SCENARIOS)
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        parser.error(f"no scenario {', '.join(map(str, unknown))}; choose from {sorted(SCENARIOS)}")
    print(f"cachetasks benchmarks: scenarios {', '.join(map(str, chosen))}")
    print(f"machine: {machine()}")
    print("every figure is a median of several runs on a small, noisy machine; compare ratios, not absolutes")
    failed = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cachetasks-bench-summary-") as tmp:
        summary_file = Path(tmp) / "summary.jsonl"
        for number in chosen:
            t0 = time.perf_counter()
            code = run_scenario(SCENARIOS[number], summary_file)
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"    (scenario {number} took {time.perf_counter() - t0:.0f} s; load average now {load})", flush=True)
            if code != 0:
                failed.append(number)
                print(f"!!! scenario {number} failed with exit code {code}", flush=True)
        summaries = read_summaries(summary_file)
    print(f"\n=== Summary ({time.perf_counter() - started:.0f} s)")
    rows = [[s.scenario, s.measure, s.service, s.original, s.limit, s.target, verdict(s.met)] for s in summaries]
    print(table(["scenario", "measure", "service", "original", "limit", "target", ""], rows))
    if failed:
        print(f"failed scenarios: {', '.join(map(str, failed))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
