"""cachetasks as a user runs it: `celery -A cachetasks worker|beat` and `python -m cachetasks listen`
processes from the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .servers import stop_process

REPO = Path(__file__).resolve().parents[1]
CELERY = [sys.executable, "-m", "celery", "-A", "cachetasks"]


def service_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The machine's environment without any cachetasks or Celery setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHETASKS_", "CELERY_", "AWS_", "FLOWER_"))}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **settings)
    return env


class Processes:
    """Processes started for one test; every one of them is stopped at the end."""

    def __init__(self, env: Mapping[str, str], logdir: Path) -> None:
        self.env = dict(env)
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with open(self.logdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                args,
                cwd=REPO,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def worker(self, name: str = "worker", *args: str, **env: str) -> subprocess.Popen[bytes]:
        cmd = [*CELERY, "worker", "-n", f"{name}@%h", "-l", "INFO", "--without-mingle", "--without-gossip", *args]
        return self.start(name, cmd, **env)

    def beat(self, name: str = "beat", *args: str, **env: str) -> subprocess.Popen[bytes]:
        schedule = self.logdir / f"{name}-schedule"
        return self.start(name, [*CELERY, "beat", "-l", "INFO", "-s", str(schedule), *args], **env)

    def listener(self, name: str = "listener", *args: str, **env: str) -> subprocess.Popen[bytes]:
        """`python -m cachetasks listen`, named `name` (its node in `status`)."""
        return self.start(name, [sys.executable, "-m", "cachetasks", "listen", "-n", name, *args], **env)

    def stop(self, name: str, *, grace: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop_process(proc, grace=grace)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def kill_all(self) -> None:
        """SIGKILL every process group at once: for the end of a test, which has no use for a warm shutdown."""
        for name in list(self.procs):
            self.stop(name, grace=0)

    def log(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(self.logdir.glob("*.log")))
