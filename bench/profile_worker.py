"""A cachetasks worker under cProfile (CPU time per thread), every thread included: where its CPU goes.

    python -m bench.profile_worker OUTPUT.prof [celery worker arguments...]

Runs `celery -A cachetasks worker` in this process with a profiler per thread (the pool's
threads included); on exit (SIGTERM: warm shutdown) the merged statistics go to OUTPUT.prof.
`python -m bench.profile_worker --report OUTPUT.prof` prints the top functions.
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import sys
import threading
import time
from types import FrameType
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _start_thread_profile(frame: FrameType, event: str, arg: Any) -> None:
    profile = cProfile.Profile(time.thread_time)  # CPU, not wall time: waits do not count
    with _lock:
        _profiles.append(profile)
    profile.enable()  # replaces this hook for the rest of the thread's life


def _dump(path: str) -> None:
    with _lock:
        profiles = list(_profiles)
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    stats.dump_stats(path)


def report(path: str, top: int = 25) -> None:
    pstats.Stats(path).sort_stats("tottime").print_stats(top)


def main() -> None:
    if sys.argv[1] == "--report":
        report(sys.argv[2])
        return
    output, args = sys.argv[1], sys.argv[2:]
    main_profile = cProfile.Profile(time.thread_time)  # CPU, not wall time: waits do not count
    _profiles.append(main_profile)
    threading.setprofile(_start_thread_profile)
    atexit.register(_dump, output)
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", "-A", "cachetasks", "worker", *args]
    main_profile.enable()
    celery_main()


if __name__ == "__main__":
    main()
