"""A TCP forwarder that can make a server unreachable: put it between the service and PostgreSQL.

proxy = TcpProxy(5432).start()        # the service connects to 127.0.0.1:proxy.port
proxy.pause()                          # "down": connections refused, open ones closed
proxy.pause(hang=True)                 # "unreachable": connections accepted, never answered
proxy.resume()
proxy.stop()
"""

from __future__ import annotations

import contextlib
import socket
import threading

BLOCK = 64 * 1024


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0  # connections accepted while forwarding
        self._lock = threading.Lock()
        self._hang = False
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()  # every socket we hold: clients, upstreams, held ones

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def pause(self, *, hang: bool = False) -> None:
        """Close every open connection; refuse new ones, or with `hang` accept them and never answer."""
        with self._lock:
            self._hang = hang
        if not hang:
            self._close_listener()
        elif self._listener is None:
            self._listen()
        self._close_open()

    def resume(self) -> None:
        """Forward again; connections held by a hanging pause are closed (their clients see an error)."""
        with self._lock:
            self._hang = False
        self._close_open()
        if self._listener is None:
            self._listen()

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        self._close_open()

    # -- internals ---------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # the same port again after a pause
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, args=(listener,), name="tcp-proxy", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        listener, thread = self._listener, self._thread
        self._listener = self._thread = None
        if thread is not None:
            thread.join(1)  # the loop notices within its accept timeout that its listener is no longer current
        if listener is not None:
            listener.close()

    def _close_open(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopped.is_set() and self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._open.add(client)
                hang = self._hang
            if hang:
                continue  # held open, unanswered, until resume or stop
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                self._forget(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.add(upstream)
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="tcp-proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while block := src.recv(BLOCK):
                dst.sendall(block)
        except OSError:
            pass
        finally:
            self._forget(src)
            self._forget(dst)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
