"""Writing files into the cache: whole, with a TTL, never over a value already there."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import redis

from ..errors import CacheWriteLost
from .keys import TMP
from .scripts import Scripts

TMP_RENEW_EVERY = 1.0  # seconds between renewals of a temporary key's TTL while a long value streams in


class Writes:
    """The write operations of `Cache`."""

    client: redis.Redis
    scripts: Scripts

    def put(self, key: str, value: bytes, *, ttl: int, replace: bool = False) -> int | None:
        """Write a whole file in one `SET NX EX`; its length, or None if a value was already there.

        With `replace`, a value already there is replaced, in one step: a reader gets the old
        value or the new one. A plain command, not a script: Redis copies a script's arguments
        into Lua strings, which costs it about 300 us of CPU per 256 KiB, ten times the SET itself.
        """
        return len(value) if self.client.set(key, value, ex=ttl, nx=not replace) else None

    def store(
        self,
        key: str,
        chunks: Iterator[bytes],
        *,
        size: int,
        ttl: int,
        tmp_ttl: int,
        replace: bool = False,
        exact: bool = False,
    ) -> int | None:
        """Write the stream at `key` with `ttl`, all or nothing; None if a value was already there (with
        `replace`, the value there is replaced, in one step).

        A stream of one chunk (`size`, announced by storage, fits in the first; 0 if unknown) is
        one `SET NX EX`. A longer one goes to a temporary key (whose TTL is renewed as it grows),
        renamed into place by a script, so readers never see part of it. With `exact` (the stream
        yields `size` bytes, or its caller fails it), the temporary value is allocated whole and
        each chunk written in place; otherwise chunks are appended, and Redis copies the value
        as it grows: two to three times the CPU of one `SET` for 32 MiB. One chunk is held at a
        time: each is let go before the next is read. Commands carry no pipeline so that a
        refused write (OOM) fails cheaply instead of echoing the payload in the error.
        """
        first = next(chunks, b"")
        if len(first) >= size:  # every announced byte is here: normally the end of the stream
            extra = next(chunks, None)
            if extra is None:
                return self.put(key, first, ttl=ttl, replace=replace)
            chunks = _then([extra], chunks)  # storage announced less than it sends
            del extra
        tmp = TMP + uuid.uuid4().hex
        in_place = exact and size > len(first)
        chunks = _then([first], chunks)
        del first
        try:
            total = (
                self._fill(tmp, chunks, size=size, tmp_ttl=tmp_ttl) if in_place else self._append(tmp, chunks, tmp_ttl)
            )
            published = self.scripts.publish(keys=[tmp, key], args=[ttl, total, "replace" if replace else "keep"])
        except BaseException:
            with contextlib.suppress(redis.RedisError):  # best effort: the temporary key expires on its own
                self.client.delete(tmp)
            raise
        if published == -1:
            raise CacheWriteLost(f"{key}: the partial value vanished before it was published")
        return total if published else None

    def _append(self, tmp: str, chunks: Iterator[bytes], tmp_ttl: int) -> int:
        """Append the stream (at least one chunk) to `tmp`; the bytes written."""
        first = next(chunks)
        self.client.set(tmp, first, ex=tmp_ttl)
        total = len(first)
        del first
        renewed = time.monotonic()
        for chunk in chunks:
            total += len(chunk)
            # A temporary key that expired or was evicted comes back from APPEND shorter.
            if self.client.append(tmp, chunk) != total:
                raise CacheWriteLost(f"{tmp}: the partial value vanished while streaming")
            del chunk
            if time.monotonic() - renewed >= TMP_RENEW_EVERY:
                renewed = time.monotonic()
                self.client.expire(tmp, tmp_ttl)
        return total

    def _fill(self, tmp: str, chunks: Iterator[bytes], *, size: int, tmp_ttl: int) -> int:
        """Write the stream into `tmp`, allocated whole; the bytes written.

        An intact value is `size` bytes long (longer only when storage sends more than it
        announced, which fails the stream at its end). One that vanished is re-created by the
        next write, shorter and without a TTL: the length tells it after any chunk but the last,
        the renewal (which asks for the key before writing) or the publishing script after it.
        """
        self.scripts.allocate(keys=[tmp], args=[size, tmp_ttl * 1000])
        total = 0
        renewed = time.monotonic()
        for chunk in chunks:
            if time.monotonic() - renewed >= TMP_RENEW_EVERY:
                renewed = time.monotonic()
                if not self.client.expire(tmp, tmp_ttl):
                    raise CacheWriteLost(f"{tmp}: the partial value vanished while streaming")
            end = total + len(chunk)
            if self.client.setrange(tmp, total, chunk) != max(size, end):
                raise CacheWriteLost(f"{tmp}: the partial value vanished while streaming")
            total = end
            del chunk
        return total


def _then(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    """The one chunk in `head`, then `rest`, holding neither once yielded (`itertools.chain` holds its arguments)."""
    yield head.pop()
    yield from rest
