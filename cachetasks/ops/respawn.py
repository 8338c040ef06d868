"""Run a command, and start it again whenever it exits by itself: `python -m cachetasks.ops.respawn CMD ...`.

The Procfile wraps each line in this. honcho stops every process as soon as one exits, so a
worker that died (killed by the kernel for memory, or ended by an error it could not survive)
would take the whole service down with it; here it is started again instead, after a pause that
doubles from 1 s up to 30 s while it keeps dying young. Two exits are final: exit code 2 (a
configuration error, which would only fail again: it stops the service at start, as before) and
any exit after this process was asked to stop. SIGTERM, SIGINT, SIGQUIT and SIGHUP are passed to
the command, which runs in a process group of its own so that it gets each signal once.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from ..printable import printable

FIRST_PAUSE, MAX_PAUSE = 1.0, 30.0
HEALTHY_AFTER = 60.0  # a command that ran this long before exiting starts again after FIRST_PAUSE
CONFIG_ERROR = 2  # what cachetasks (and argparse, and Celery's command line) exit with on a bad setting
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def respawn(command: Sequence[str], *, say: Callable[[str], None]) -> int:
    """Run `command` until it exits with CONFIG_ERROR or this process is signalled; return its last exit code."""
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in FORWARDED:
        signal.signal(signum, stop)
    name, pause = printable(shlex.join(command[:4])), FIRST_PAUSE  # `celery -A cachetasks worker`
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command, process_group=0)
        if stopping.is_set():  # asked to stop while the command was starting: it missed the signal
            child.terminate()
        code = child.wait()
        code = code if code >= 0 else 128 - code  # as a shell reports a signal's end
        ran = time.monotonic() - started
        if stopping.is_set() or code == CONFIG_ERROR:
            return code
        pause = FIRST_PAUSE if ran >= HEALTHY_AFTER else pause
        say(f"{name} exited with code {code} after {ran:.0f}s; starting it again in {pause:.0f}s")
        if stopping.wait(pause):
            return code
        pause = min(pause * 2, MAX_PAUSE)


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m cachetasks.ops.respawn COMMAND [ARGS...]", file=sys.stderr)
        return CONFIG_ERROR
    return respawn(command, say=lambda line: print(f"respawn: {line}", file=sys.stderr, flush=True))


if __name__ == "__main__":
    sys.exit(main())
