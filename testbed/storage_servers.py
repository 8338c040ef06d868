"""Storage emulators for the tests and benchmarks: Azurite (Azure Blob), the GCS emulator, a MariaDB database.

Each starts on a free port of the loopback interface, waits until it answers, and stops
only what it started. `scripts/ensure-azurite.sh` installs Azurite from the npm registry
into `.tools/azurite` (git-ignored).
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import subprocess
import sys
from pathlib import Path

from .servers import free_port, stop_process, wait_until

REPO = Path(__file__).resolve().parents[1]
AZURITE = REPO / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft): not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Missing(RuntimeError):
    """An emulator that is not installed here: tests skip on a laptop and fail in CI."""


def _socket_answers(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


class AzuriteServer:
    """Azurite's Blob service (Node.js), in memory."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("azurite-blob") or (str(AZURITE) if AZURITE.exists() else None)
        if binary is None:
            raise Missing("Azurite is not installed (scripts/ensure-services.sh azurite)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def start(self) -> AzuriteServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence"]
        cmd += ["--skipApiVersionCheck", "--loose", "--disableTelemetry"]
        log = open(self.workdir / f"azurite-{self.port}.log", "ab")  # noqa: SIM115 -- owned by the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: _socket_answers(self.port), timeout=30, what="Azurite")
        return self

    def container_sas(self, container: str, *, permission: str = "rwdl") -> str:
        """A SAS token for `container`, signed with the development account's key, valid for a day."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return str(
            generate_container_sas(
                AZURITE_ACCOUNT,
                container,
                account_key=AZURITE_KEY,
                permission=ContainerSasPermissions.from_string(permission),
                expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
            )
        )

    def create_container(self, container: str) -> str:
        """Create `container` (if missing); return its URL."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        credential = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
        with (
            BlobServiceClient(self.account_url, credential=credential) as service,
            contextlib.suppress(ResourceExistsError),
        ):
            service.create_container(container)
        return f"{self.account_url}/{container}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            self.proc = None


class GcsEmulator:
    """`gcp-storage-emulator` (PyPI), in memory, with one bucket; clients find it by STORAGE_EMULATOR_HOST."""

    def __init__(self, workdir: Path, bucket: str) -> None:
        self.workdir = workdir
        self.bucket = bucket
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        binary = Path(sys.executable).parent / "gcp-storage-emulator"
        if not binary.exists():
            raise Missing("gcp-storage-emulator is not installed (requirements-dev.txt)")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GcsEmulator:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.binary), "-d", str(self.workdir), "start", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--default-bucket", self.bucket, "--in-memory", "--quiet"]
        log = open(self.workdir / f"gcs-{self.port}.log", "ab")  # noqa: SIM115 -- owned by the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: _socket_answers(self.port), timeout=30, what="the GCS emulator")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            self.proc = None
