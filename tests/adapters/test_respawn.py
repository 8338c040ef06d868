"""The Procfile's wrapper as honcho runs it: a process that exits is started again, a signal stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.processes import REPO
from testbed.servers import stop_process, wait_until

# A command that notes its pid in a folder, then sleeps (or exits at once with the code given).
CHILD = """
import pathlib, sys, time
pathlib.Path(sys.argv[1], str(__import__("os").getpid())).touch()
if len(sys.argv) > 2:
    sys.exit(int(sys.argv[2]))
time.sleep(60)
"""


def respawn(tmp_path: Path, *child_args: str) -> subprocess.Popen[bytes]:
    """`python -m cachetasks.ops.respawn python -c CHILD FOLDER [CODE]`, its output in tmp_path/output."""
    (tmp_path / "pids").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "cachetasks.ops.respawn", sys.executable, "-c", CHILD, str(tmp_path / "pids")]
    with open(tmp_path / "output", "wb") as output:
        return subprocess.Popen([*command, *child_args], cwd=REPO, stderr=output, start_new_session=True)


def said(tmp_path: Path) -> list[str]:
    """The wrapper's lines."""
    return [line for line in (tmp_path / "output").read_text().splitlines() if line.startswith("respawn: ")]


def pids(tmp_path: Path) -> list[int]:
    """The pids of the children started so far, in the order they started."""
    found = sorted((tmp_path / "pids").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return [int(p.name) for p in found]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture
def started() -> list[subprocess.Popen[bytes]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop_process(proc, grace=0)


def test_a_command_killed_is_started_again_and_a_sigterm_stops_it_and_the_wrapper(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """SIGKILL the command: a new one within 2 s, the wrapper still up; SIGTERM the wrapper: both end, code 143."""
    # Given the wrapper running a command
    wrapper = respawn(tmp_path)
    started.append(wrapper)
    first = wait_until(lambda: pids(tmp_path), timeout=10, what="the first command")[0]  # type: ignore[index]
    # When the command is killed
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)  # as the kernel's OOM killer does
    # Expect another one started within 2 s, and the wrapper still running
    second = wait_until(lambda: pids(tmp_path)[1:], timeout=5, what="a second command")[0]  # type: ignore[index]
    assert time.monotonic() - killed_at <= 2
    assert wrapper.poll() is None
    # When the wrapper gets SIGTERM (honcho's stop)
    wrapper.send_signal(signal.SIGTERM)
    # Expect the command stopped too, and the wrapper gone with its exit code
    assert wrapper.wait(5) == 128 + signal.SIGTERM
    assert not alive(second)
    assert len(pids(tmp_path)) == 2
    assert [line.split(" exited ")[1].split(";")[0] for line in said(tmp_path)] == ["with code 137 after 0s"]


def test_a_configuration_error_is_not_retried(tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """A command that exits with 2 (a bad setting) ends the wrapper with 2: it would only fail again."""
    wrapper = respawn(tmp_path, "2")
    started.append(wrapper)
    assert wrapper.wait(10) == 2
    assert len(pids(tmp_path)) == 1


def test_a_command_that_keeps_dying_young_waits_longer_each_time(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """Exits 1 at once, again and again: started again after 1 s, then 2 s, then 4 s, each said in one line."""
    # Given the wrapper running a command that fails at once
    wrapper = respawn(tmp_path, "1")
    started.append(wrapper)
    # When it has failed three times, and the wrapper waits to start it a fourth time
    wait_until(lambda: len(said(tmp_path)) >= 3, timeout=10, what="three commands that exited")
    wrapper.send_signal(signal.SIGTERM)
    # Expect the pauses to double, and the wrapper to stop at once when asked during one
    assert wrapper.wait(2) == 1
    assert [line.rsplit("again in ", 1)[1] for line in said(tmp_path)] == ["1s", "2s", "4s"]
