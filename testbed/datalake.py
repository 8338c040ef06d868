"""A stand-in for Azure Data Lake Storage Gen2 and Microsoft Entra ID, over HTTPS, for the tests only.

It exists because no emulator offers them: Azurite serves Blob, Queue and Table but not Data
Lake's DFS endpoint, and nothing local issues Entra ID tokens. It answers the requests that
azure-identity and azure-storage-file-datalake send, as Microsoft's REST reference documents
them: OpenID discovery and the client-credentials token; on storage, file system properties,
create, append and flush, path properties, and reads by range with If-Match. Files live in
memory; every storage request must carry a token the stub issued; `fail_next` makes requests
fail with a status of your choice. It shows what the client sends and how the backend reads the
answers, not how the real services behave.

The certificate is self-signed (`tls.py`); clients trust it through azure-core's
`connection_verify=stub.ca_file`.
"""

from __future__ import annotations

import email.utils
import json
import re
import secrets
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from .tls import self_signed, server_context

# Made-up identities the stub accepts: not credentials of anything real.
TENANT_ID = "00000000-0000-4000-8000-00000000cafe"
CLIENT_ID = "00000000-0000-4000-8000-0000000c11e7"
CLIENT_SECRET = "stub-client-secret-" + "x" * 12
STORAGE_SCOPE = "https://storage.azure.com/.default"
RANGE = re.compile(r"bytes=(\d+)-(\d*)")

Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


class Read(NamedTuple):
    """A GET of a file, as the stand-in received it."""

    path: str
    range: str  # the x-ms-range header, "" for the whole file
    if_match: str  # the If-Match header, "" when absent


@dataclass
class Failure:
    """The answer to a storage request whose path contains `path_contains`: `status`, with error `code`."""

    status: int
    code: str
    path_contains: str = ""


@dataclass
class _File:
    data: bytes = b""
    pending: bytearray = field(default_factory=bytearray)  # appended, not flushed yet
    etag: str = ""
    modified: str = ""

    def commit(self, length: int) -> None:
        self.data, self.pending = bytes(self.pending[:length]), bytearray()
        self.etag, self.modified = f'"0x8D{uuid.uuid4().hex[:13].upper()}"', email.utils.formatdate(usegmt=True)

    def headers(self) -> dict[str, str]:
        return {"ETag": self.etag, "Last-Modified": self.modified, "x-ms-resource-type": "file"}


class DataLakeStub:
    """One storage account and one Entra ID tenant, at `url` and `authority`."""

    def __init__(self, workdir: Path) -> None:
        self.cert_file, key_file = self_signed(workdir)
        self._lock = threading.Lock()
        self._file_systems: dict[str, dict[str, _File]] = {}
        self._tokens: set[str] = set()
        self._failures: list[Failure] = []
        self.token_requests = 0
        self.storage_requests = 0
        self.reads: list[Read] = []  # every GET of a file
        self._server = _TlsServer(("127.0.0.1", 0), _handler_for(self), server_context(self.cert_file, key_file))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The account URL: file system `fs` is at `{url}/fs`."""
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def authority(self) -> str:
        """The sign-in host, in place of login.microsoftonline.com."""
        return self.url

    @property
    def ca_file(self) -> str:
        return str(self.cert_file)

    def start(self) -> DataLakeStub:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def create_file_system(self, name: str) -> None:
        with self._lock:
            self._file_systems.setdefault(name, {})

    def fail_next(self, count: int, failure: Failure) -> None:
        """Answer the next `count` storage requests on a matching path with `failure`."""
        with self._lock:
            self._failures.extend([failure] * count)

    def forget_failures(self) -> None:
        """Drop the failures queued and not used yet."""
        with self._lock:
            self._failures.clear()

    # -- Entra ID ----------------------------------------------------------------------------------

    def discovery(self, path: str) -> Answer:
        if path != f"/{TENANT_ID}/v2.0/.well-known/openid-configuration":
            return _json(404, {"error": "invalid_tenant"})
        base = f"{self.url}/{TENANT_ID}"
        document = {
            "issuer": f"{base}/v2.0",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        }
        return _json(200, document)

    def token(self, path: str, form: dict[str, str]) -> Answer:
        with self._lock:
            self.token_requests += 1
        if path != f"/{TENANT_ID}/oauth2/v2.0/token" or form.get("grant_type") != "client_credentials":
            return _json(400, {"error": "invalid_request", "error_description": "AADSTS900144: unknown tenant"})
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return _json(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."})
        if form.get("scope") != STORAGE_SCOPE:
            return _json(400, {"error": "invalid_scope", "error_description": "AADSTS70011: invalid scope"})
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return _json(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token})

    # -- storage -----------------------------------------------------------------------------------

    def storage(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Answer:
        with self._lock:
            self.storage_requests += 1
            scheme, _, token = str(headers.get("Authorization", "")).partition(" ")
            if scheme != "Bearer" or token not in self._tokens:
                return _error(method, 401, "InvalidAuthenticationInfo")
            failure = next((f for f in self._failures if f.path_contains in path), None)
            if failure is not None:
                self._failures.remove(failure)
                return _error(method, failure.status, failure.code)
            name, _, file_path = path.lstrip("/").partition("/")
            files = self._file_systems.get(name)
            if files is None:
                return _error(method, 404, "ContainerNotFound" if method in ("GET", "HEAD") else "FilesystemNotFound")
            if not file_path:
                return 200, {"ETag": '"0x8DFILESYSTEM"', "Last-Modified": email.utils.formatdate(usegmt=True)}, b""
            return self._file(method, files, file_path, query, headers, body)

    def _file(
        self, method: str, files: dict[str, _File], path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> Answer:
        if method == "PUT" and query.get("resource") == "file":
            files[path] = created = _File()
            created.commit(0)
            return 201, {**created.headers(), "x-ms-request-server-encrypted": "true"}, b""
        found = files.get(path)
        if found is None:
            return _error(method, 404, "PathNotFound" if method in ("PUT", "PATCH") else "BlobNotFound")
        if method == "PATCH" and query.get("action") == "append":
            if int(query.get("position", "-1")) != len(found.pending):
                return _error(method, 400, "InvalidFlushPosition")
            found.pending += body
            return 202, {"x-ms-request-server-encrypted": "true"}, b""
        if method == "PATCH" and query.get("action") == "flush":
            if int(query.get("position", "-1")) != len(found.pending):
                return _error(method, 400, "InvalidFlushPosition")
            found.commit(len(found.pending))
            return 200, found.headers(), b""
        if method == "HEAD":
            return 200, {**found.headers(), "Content-Length": str(len(found.data)), "x-ms-blob-type": "BlockBlob"}, b""
        if method == "GET":
            return self._read(found, path, headers)
        return _error(method, 400, "UnsupportedHttpVerb")

    def _read(self, found: _File, path: str, headers: Any) -> Answer:
        wanted = str(headers.get("x-ms-range") or headers.get("Range") or "")
        if_match = str(headers.get("If-Match") or "")
        self.reads.append(Read(path, wanted, if_match))
        if if_match and if_match not in ("*", found.etag):
            return _error("GET", 412, "ConditionNotMet")
        common = {**found.headers(), "x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"}
        match = RANGE.fullmatch(wanted)
        if match is None:
            return 200, common, found.data
        start = int(match[1])
        end = min(int(match[2]) if match[2] else len(found.data) - 1, len(found.data) - 1)
        if start >= len(found.data):
            return _error("GET", 416, "InvalidRange")
        part = found.data[start : end + 1]
        return 206, {**common, "Content-Range": f"bytes {start}-{end}/{len(found.data)}"}, part


def _json(status: int, document: dict[str, Any]) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(document).encode()


def _error(method: str, status: int, code: str) -> Answer:
    """An error as the service sends it: the code in a header, and in a JSON (DFS) or XML (blob) body."""
    headers = {"x-ms-error-code": code}
    if method == "HEAD":
        return status, headers, b""
    if method in ("PUT", "PATCH"):
        document = {"error": {"code": code, "message": f"{code} (from the stand-in)"}}
        return status, {**headers, "Content-Type": "application/json"}, json.dumps(document).encode()
    xml = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'
    return status, {**headers, "Content-Type": "application/xml"}, xml.encode()


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext):
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's own thread, not in the accepting one.
        try:
            secured = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # a client that gave up, or that does not trust the certificate
        try:
            super().finish_request(secured, client_address)
        finally:
            secured.close()


def _handler_for(stub: DataLakeStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), {k: v[0] for k, v in parse_qs(parts.query).items()}
            if self.command == "GET" and path.endswith("/.well-known/openid-configuration"):
                status, headers, content = stub.discovery(path)
            elif self.command == "POST" and path.endswith("/oauth2/v2.0/token"):
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                status, headers, content = stub.token(path, form)
            else:
                status, headers, content = stub.storage(self.command, path, query, self.headers, body)
            self.send_response(status)
            for name, value in {**headers, "x-ms-request-id": str(uuid.uuid4()), "x-ms-version": "2025-01-05"}.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_HEAD = do_PUT = do_PATCH = do_POST = do_DELETE = _answer

    return Handler
