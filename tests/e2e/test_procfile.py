"""The production Procfile under honcho: a process that dies is started again, and the others never notice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cachetasks.cache import Cache
from cachetasks.ops.demo import insert_document
from testbed.processes import REPO, service_env
from testbed.servers import free_port, stop_process, wait_until
from tests.support.e2e import put_local

VENV_BIN = Path(sys.executable).parent


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def celery_processes(root: int) -> dict[str, int]:
    """The Celery processes under `root` by role: its node name (`files@%h`, ...), `beat` or `flower`."""
    children, found, todo = _children(), {}, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if len(argv) > 2 and Path(argv[1]).name == "celery":
            found[next((w for w in argv if w.endswith("@%h")), argv[4])] = pid
    return found


@pytest.fixture
def honcho(env: dict[str, str], sqlite_engine: sa.Engine, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`honcho start` of the repository's Procfile, as the README runs it, on the test's Redis and folder."""
    settings = {**env, "FLOWER_BASIC_AUTH": "admin:procfile-test", "FLOWER_PORT": str(free_port())}
    environ = {**service_env(settings), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(tmp_path / "honcho.log", "wb") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "honcho"), "start", "-f", str(REPO / "Procfile")],
            cwd=REPO,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_process(proc, grace=30)
        if proc.returncode is None or celery_processes(proc.pid):
            print((tmp_path / "honcho.log").read_text()[-5000:])


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


PROCFILE_ROLES = {"files@%h", "files2@%h", "collect@%h", "beat", "flower"}


def test_a_process_killed_under_honcho_is_started_again_and_the_others_keep_running(
    honcho: subprocess.Popen[bytes], env: dict[str, str], sqlite_engine: sa.Engine, cache: Cache
) -> None:
    """SIGKILL a files worker: honcho keeps the other four as they were, the worker comes back, files get cached."""
    # Given the Procfile's five processes running, a file cached
    put_local(env, "kb1", "before.pdf", b"before the kill")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="before.pdf")
    wait_until(lambda: cache.client.exists("kb1/before.pdf"), timeout=30, what="a file cached before the kill")
    before = wait_until(
        lambda: (found := celery_processes(honcho.pid)).keys() == PROCFILE_ROLES and found,
        timeout=30,
        what="the Procfile's processes",
    )
    assert isinstance(before, dict)
    # When the first files worker is killed, as the kernel's OOM killer would
    os.kill(before["files@%h"], signal.SIGKILL)
    # Expect a new files worker within a few seconds, honcho still running, the others the same processes
    after = wait_until(
        lambda: (
            (found := celery_processes(honcho.pid)).get("files@%h", before["files@%h"]) != before["files@%h"] and found
        ),
        timeout=10,
        what="a new files worker",
    )
    assert isinstance(after, dict)
    assert honcho.poll() is None
    assert {role: pid for role, pid in after.items() if role != "files@%h"} == {
        role: pid for role, pid in before.items() if role != "files@%h"
    }
    # and the service still caching files
    put_local(env, "kb1", "after.pdf", b"after the kill")
    with sqlite_engine.begin() as conn:
        insert_document(conn, kb_id="kb1", location="after.pdf")
    wait_until(lambda: cache.client.exists("kb1/after.pdf"), timeout=30, what="a file cached after the kill")
    # When honcho is stopped (Ctrl-C)
    honcho.send_signal(signal.SIGINT)
    # Expect every process gone with it
    honcho.wait(30)
    wait_until(lambda: not [pid for pid in after.values() if _alive(pid)], timeout=15, what="every process to end")
