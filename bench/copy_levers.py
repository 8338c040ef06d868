"""The copy itself, without Celery: how a file goes from S3 to Redis, one way against another.

    python -m bench.copy_levers [--runs 3] [--threads 16] [--set 256KiB|4MiB|32MiB ...]

16 threads copy the same files from the S3 server on loopback into Redis, each way in turn, in
every run (the ways alternate, so the machine's drift hits them alike); 32 MiB files, which the
service streams in chunks of 4 MiB, only the first three ways and the appended one:

- `whole read, shared client`: the limit's copy (one boto3 client, `get_object`, `read()`, `SET`);
- `the service's read`: the service's storage and write path (`S3Storage.open`, chunks of
  CACHETASKS_CHUNK_BYTES, `Cache.store`: one `SET` when the file fits one chunk);
- `the service's read, 1 MiB chunks`: the same, streamed (4 MiB files): a temporary value allocated
  whole, each chunk written in place, then a rename by script;
- `..., appended`: streamed as a file whose exact size is unknown (a decrypted one): each chunk
  appended to the temporary value, which Redis grows by copying it;
- `a client per file`: no connection reuse, as code that builds its client per copy does;
- `ranged reads, 4 parts`: four `get_object` calls with a `Range` each, joined, one `SET`;
- `readinto a buffer, SET a memoryview`: the body read into one preallocated `bytearray`,
  written without a `bytes` copy.

Each line gives the wall time, files/s, its ratio to the limit's copy in the same run, and the
CPU of this process, Redis and the S3 server per file.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.lab import KiB, MiB, file_name, lab, put_s3
from bench.measure import NOISE, CpuMeter, median, note, ratio, table
from cachetasks.cache import Cache
from cachetasks.ref import cache_key
from cachetasks.settings import Settings
from cachetasks.storage.s3 import S3Storage, make_client

TTL = 720
BUCKET = "levers"
SETS = {"256KiB": (2000, 256 * KiB), "4MiB": (200, 4 * MiB), "32MiB": (20, 32 * MiB)}  # name: (files, bytes each)
LARGE = 32 * MiB
FOR_LARGE = ("whole read, shared client (the limit)", "the service's read", "the service's read, appended")
Copy = Callable[[str], None]


def ways(the_lab: Any, client: redis.Redis, threads: int) -> dict[str, Copy]:
    shared = the_lab.s3_client(pool=threads)
    env = the_lab.env("s3")
    settings = Settings.from_env({**env, "CACHETASKS_CONCURRENCY": str(threads)})
    service = S3Storage(make_client(settings))
    cache = Cache(client)

    def whole(name: str) -> None:
        client.set(cache_key(BUCKET, name), shared.get_object(Bucket=BUCKET, Key=name)["Body"].read(), ex=TTL)

    def service_read(storage: S3Storage, chunk: int, *, exact: bool = True) -> Copy:
        def copy(name: str) -> None:
            with storage.open(BUCKET, name, chunk_size=chunk) as blob:
                key = cache_key(BUCKET, name)
                cache.store(key, blob.chunks, size=blob.size, ttl=TTL, tmp_ttl=60, replace=True, exact=exact)

        return copy

    def fresh_client(name: str) -> None:
        own = the_lab.s3_client(pool=1)
        client.set(cache_key(BUCKET, name), own.get_object(Bucket=BUCKET, Key=name)["Body"].read(), ex=TTL)
        own.close()

    def ranged(name: str) -> None:
        size = shared.head_object(Bucket=BUCKET, Key=name)["ContentLength"]
        part = -(-size // 4)
        ranges = [f"bytes={start}-{min(start + part, size) - 1}" for start in range(0, size, part)]
        parts = [shared.get_object(Bucket=BUCKET, Key=name, Range=span)["Body"].read() for span in ranges]
        client.set(cache_key(BUCKET, name), b"".join(parts), ex=TTL)

    def readinto(name: str) -> None:
        response = shared.get_object(Bucket=BUCKET, Key=name)
        buffer = bytearray(response["ContentLength"])
        view, got = memoryview(buffer), 0
        raw = response["Body"]._raw_stream  # urllib3's response: reads into the buffer given
        while got < len(buffer):
            n = raw.readinto(view[got:])
            if not n:
                raise EOFError(name)
            got += n
        client.set(cache_key(BUCKET, name), view, ex=TTL)

    return {
        "whole read, shared client (the limit)": whole,
        "the service's read": service_read(service, settings.chunk_bytes),
        "the service's read, appended": service_read(service, settings.chunk_bytes, exact=False),
        "the service's read, 1 MiB chunks": service_read(service, 1 * MiB),
        "the service's read, 1 MiB chunks, appended": service_read(service, 1 * MiB, exact=False),
        "a client per file": fresh_client,
        "ranged reads, 4 parts": ranged,
        "readinto a buffer, SET a memoryview": readinto,
    }


def run(copy: Copy, names: list[str], threads: int) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(copy, name) for name in names]:
            future.result()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--set", choices=SETS, action="append", help="one set of files (default: each)")
    args = parser.parse_args()
    print(f"\n=== The copy itself: S3 on loopback -> Redis, {args.threads} threads, no Celery", flush=True)
    note(NOISE.format(n=args.runs, cpus=os.cpu_count()))
    with lab(s3=True) as the_lab:
        client = the_lab.cache
        assert the_lab.s3_server is not None and the_lab.s3_server.proc is not None
        meter = CpuMeter({"redis": the_lab.redis_server.proc.pid, "s3": the_lab.s3_server.proc.pid})  # type: ignore[union-attr]
        copies = ways(the_lab, client, args.threads)
        for name in args.set or SETS:
            count, size = SETS[name]
            names = [file_name(f"levers/{size}/f", i) for i in range(count)]
            put_s3(the_lab.s3_client(), BUCKET, names, size)
            chosen = {way: copy for way, copy in copies.items() if size < LARGE or way in FOR_LARGE}
            walls: dict[str, list[float]] = {way: [] for way in chosen}
            cpus: dict[str, list[dict[str, float]]] = {way: [] for way in chosen}
            for _ in range(args.runs):
                for way, copy in chosen.items():
                    client.flushdb()
                    before = meter.snapshot()
                    walls[way].append(run(copy, names, args.threads))
                    cpus[way].append(CpuMeter.diff(before, meter.snapshot()))
                    if client.dbsize() != count:
                        raise AssertionError(f"{way}: {client.dbsize()} keys, not {count}")
            base = median(walls["whole read, shared client (the limit)"])
            rows = []
            for way in chosen:
                wall = median(walls[way])
                per_file = [median([c[k] for c in cpus[way]]) / count * 1000 for k in ("bench", "redis", "s3")]
                figures = [f"{wall:.2f}", f"{count / wall:.0f}", f"{ratio(base, wall):.2f}x"]
                rows.append((way, *figures, *(f"{ms:.2f}" for ms in per_file)))
            print(f"\n  {count} x {name}")
            headers = ["way", "wall s", "files/s", "/ limit", "CPU ms/file: copier", "redis", "S3 server"]
            print(table(headers, rows))


if __name__ == "__main__":
    main()
