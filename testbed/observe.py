"""Watch service processes from outside: their memory and CPU in /proc, and their log lines by time."""

from __future__ import annotations

import collections
import ctypes
import datetime
import os
import re
import select
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

# Celery's log format: "[2026-01-31 12:00:00,123: WARNING/MainProcess] message"
_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): (\w+)/[^\]]*\] (.*)$")
PROBLEM_LEVELS = ("WARNING", "ERROR", "CRITICAL")


def status_kib(pid: int, field_name: str) -> int:
    """A memory figure of /proc/<pid>/status in KiB: VmRSS (now) or VmHWM (the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / 100  # USER_HZ is 100 on Linux


@dataclass(frozen=True)
class LogLine:
    at: float  # unix time
    level: str
    message: str


def log_lines(text: str) -> list[LogLine]:
    """The lines of a Celery log that carry a timestamp (continuation lines belong to the line before)."""
    lines = []
    for raw in text.splitlines():
        match = _LINE.match(raw)
        if match:
            stamp = datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            lines.append(LogLine(stamp, match[2], match[3]))
    return lines


def between(lines: list[LogLine], start: float, end: float) -> list[LogLine]:
    return [line for line in lines if start <= line.at <= end]


def problems(lines: list[LogLine]) -> list[LogLine]:
    return [line for line in lines if line.level in PROBLEM_LEVELS]


@dataclass
class Poller:
    """Sample a Redis check every `interval` seconds on a thread, until stopped; keeps every answer."""

    sample: Callable[[], object]
    interval: float = 0.01
    seen: list[object] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Poller:
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append(self.sample())
            except redis.RedisError as exc:  # a Redis that is being stopped; recorded, not raised
                self.errors.append(exc)
            time.sleep(self.interval)


def keys_matching(client: redis.Redis, pattern: str) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=1000))


def text_keys(client: redis.Redis) -> Iterator[str]:
    for key in client.scan_iter(count=1000):
        yield key.decode(errors="replace")


class OpenCounter:
    """Count the opens of the files in one directory (inotify IN_OPEN): reads of a local storage, by file name.

    Only opens after `__enter__` count; the directory's own opens are ignored.
    """

    IN_OPEN = 0x20
    IN_CLOSE = 0x08 | 0x10  # watched too: inotify merges identical consecutive events, an open-close-open is not
    IN_NONBLOCK_CLOEXEC = 0o4000 | 0o2000000

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opens: collections.Counter[str] = collections.Counter()
        self._fd = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OpenCounter:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(self.IN_NONBLOCK_CLOEXEC)
        if self._fd < 0 or libc.inotify_add_watch(self._fd, bytes(self.directory), self.IN_OPEN | self.IN_CLOSE) < 0:
            raise OSError(ctypes.get_errno(), "inotify")
        self._thread = threading.Thread(target=self._run, name="open-counter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        os.close(self._fd)

    def _run(self) -> None:
        header = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of NUL-padded name
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                continue
            buffer = os.read(self._fd, 1 << 20)
            offset = 0
            while offset < len(buffer):
                _, mask, _, length = header.unpack_from(buffer, offset)
                name = buffer[offset + header.size : offset + header.size + length].rstrip(b"\0")
                offset += header.size + length
                if mask & self.IN_OPEN and name:
                    self.opens[os.fsdecode(name)] += 1


def hash_of(client: redis.Redis, key: str) -> dict[str, str]:
    """A Redis hash as text (the service's report and metrics hashes)."""
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]  # a binary-safe client
    return {k.decode(): v.decode() for k, v in raw.items()}
