"""An HTTP proxy in front of the S3 server that counts requests and injects latency and faults.

Used by the tests (in-process: read `proxy.gets`, queue faults with `proxy.fail_next`) and
by the benchmarks (as a process: `python -m testbed.proxy --upstream URL --latency 0.05`,
with counters at GET /__proxy__/stats).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
STREAM_BLOCK = 256 * 1024


@dataclass
class Fault:
    """What to do to one GET: answer `status`, reset the connection, or stall for `stall` s.

    A stall happens once the first `stall_after` bytes of the body are sent (at most one stream block).
    """

    status: int | None = None
    code: str = "InjectedFault"  # the S3 error code answered with `status`, e.g. AccessDenied
    reset: bool = False
    stall: float = 0.0
    key_contains: str = ""
    stall_after: int = 1


class S3Proxy:
    def __init__(self, upstream: str, *, latency: float = 0.0, get_latency: float = 0.0) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.latency = latency  # added to every request
        self.get_latency = get_latency  # added to object GETs only: "slow storage"
        self.bandwidth = 0  # bytes per second for object GET bodies; 0: as fast as the server
        self.gets: collections.Counter[str] = collections.Counter()  # "/bucket/key" -> count
        self.heads: collections.Counter[str] = collections.Counter()  # "/bucket/key" -> object HEADs (version checks)
        self.get_times: collections.defaultdict[str, list[float]] = collections.defaultdict(list)  # monotonic
        self.requests = 0
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> S3Proxy:
        # Polled every 50 ms for a shutdown (the default, 0.5 s, is what each stop would then cost).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="s3-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.gets.clear()
            self.heads.clear()
            self.get_times.clear()
            self.requests = 0
            self.bandwidth = 0
            self._faults.clear()
            self.latency = self.get_latency = 0.0

    def fail_next(self, count: int, fault: Fault) -> None:
        """Apply `fault` to the next `count` object GETs (whose path contains fault.key_contains)."""
        with self._lock:
            self._faults.extend([fault] * count)

    def total_gets(self) -> int:
        with self._lock:
            return sum(self.gets.values())

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests += 1
            if method == "HEAD" and path.count("/") >= 2:
                self.heads[path] += 1
            if method != "GET" or path.count("/") < 2:
                return None
            self.gets[path] += 1
            self.get_times[path].append(time.monotonic())
            for i, fault in enumerate(self._faults):
                if fault.key_contains in path:
                    return self._faults.pop(i)
        return None


def _handler_for(proxy: S3Proxy) -> type[BaseHTTPRequestHandler]:
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the tests read counters, not logs

        def _upstream(self) -> http.client.HTTPConnection:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
            return conn

        def _forward(self) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            if path.startswith("/__proxy__/"):
                return self._control(path)
            fault = proxy._take(self.command, path)
            delay = proxy.latency + (proxy.get_latency if self.command == "GET" and path.count("/") >= 2 else 0)
            if delay:
                time.sleep(delay)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if fault and fault.reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.close_connection = True
                self.connection.close()
                return None
            if fault and fault.status:
                payload = f"<Error><Code>{fault.code}</Code><Message>{fault.status}</Message></Error>".encode()
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "expect"}
            try:
                conn = self._upstream()
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                local.conn = None
                self.send_error(502)
                return None
            self.send_response(response.status, response.reason)
            resp_len = response.getheader("Content-Length")
            data = None
            if resp_len is None and self.command != "HEAD":
                data = response.read()
                resp_len = str(len(data))
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            if resp_len is not None:
                self.send_header("Content-Length", resp_len)
            self.end_headers()
            if data is not None:
                self.wfile.write(data)
                return None
            first = True
            while block := response.read(STREAM_BLOCK):
                if first and fault and fault.stall:
                    self.wfile.write(block[: fault.stall_after])
                    self.wfile.flush()
                    time.sleep(fault.stall)
                    block = block[fault.stall_after :]
                first = False
                self.wfile.write(block)
                if proxy.bandwidth and path.count("/") >= 2:
                    time.sleep(len(block) / proxy.bandwidth)
            return None

        def _control(self, path: str) -> None:
            if path == "/__proxy__/reset":
                proxy.reset()
            stats = {"requests": proxy.requests, "gets": proxy.total_gets(), "latency": proxy.latency}
            payload = json.dumps(stats).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="the S3 server's URL")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--port-file", help="write the proxy's URL to this file once it listens")
    args = parser.parse_args()
    proxy = S3Proxy(args.upstream, latency=args.latency)
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(proxy.url)
    proxy._server.serve_forever()


if __name__ == "__main__":
    main()
