"""Azure Data Lake Storage Gen2 with a service principal, as RAGFlow's `AZURE_SPN` connector keeps files.

One file system (RAGFlow's `container_name`); a file `(bucket, location)` is the path
`"{bucket}/{location}"`. The client secret buys tokens from Microsoft Entra ID for the
configured cloud; neither the secret nor a token is ever logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azure.identity import AzureAuthorityHosts, ClientSecretCredential
from azure.storage.filedatalake import FileSystemClient

from ..errors import FileMissing
from .azure_blob import client_options
from .azure_common import AZURE_ERRORS, downloaded, etag_version, translate
from .base import Blob, check_address

if TYPE_CHECKING:
    from ..settings import Settings

AUTHORITIES = {
    "public": AzureAuthorityHosts.AZURE_PUBLIC_CLOUD,
    "china": AzureAuthorityHosts.AZURE_CHINA,
    "government": AzureAuthorityHosts.AZURE_GOVERNMENT,
    "germany": "login.microsoftonline.de",  # RAGFlow's name for it; azure-identity no longer lists it
}


def make_client(settings: Settings, *, authority: str | None = None, **transport: Any) -> FileSystemClient:
    """A file system client whose credential is the settings' service principal.

    `transport` goes to both the credential and the client (azure-core options such as
    `connection_verify`). `authority` replaces the cloud's sign-in host; such a host is used as
    given, without asking Microsoft's instance discovery whether it knows it.
    """
    credential = ClientSecretCredential(
        tenant_id=str(settings.azure_tenant_id),
        client_id=str(settings.azure_client_id),
        client_secret=str(settings.azure_client_secret),
        authority=authority or AUTHORITIES[settings.azure_cloud],
        disable_instance_discovery=authority is not None,
        retry_total=1,  # one more attempt to sign in; the copy task's backoff does the rest
        **transport,
    )
    return FileSystemClient(
        account_url=str(settings.azure_account_url),
        file_system_name=str(settings.azure_container_name),
        credential=credential,
        **client_options(settings),
        **transport,
    )


def path_of(bucket: str, location: str) -> str:
    return f"{bucket}/{location}"


class AzureDataLakeStorage:
    def __init__(self, client: FileSystemClient) -> None:
        self.client = client

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        ref = check_address(bucket, location)
        file = self.client.get_file_client(path_of(bucket, location))
        return downloaded(lambda: file.download_file(max_concurrency=1), ref, chunk_size)

    def stat(self, bucket: str, location: str) -> str:
        ref = check_address(bucket, location)
        return etag_version(self.client.get_file_client(path_of(bucket, location)).get_file_properties, ref)

    def put(self, bucket: str, location: str, data: bytes) -> None:
        """Create, append and flush, as RAGFlow's connector writes a file."""
        check_address(bucket, location)
        file = self.client.create_file(path_of(bucket, location))
        if data:
            file.append_data(data, offset=0, length=len(data))
        file.flush_data(len(data))

    def check(self) -> str:
        try:
            self.client.get_file_system_properties()
        except AZURE_ERRORS as exc:
            error = translate(exc)
            if isinstance(error, FileMissing):
                raise FileMissing(f"file system {self.client.file_system_name} does not exist") from None
            raise error from None
        return f"Azure Data Lake file system {self.client.url} (service principal)"

    def close(self) -> None:
        self.client.close()
