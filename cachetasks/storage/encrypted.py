"""RAGFlow's encryption at rest, undone while streaming: the cache holds what RAGFlow's `get` returns.

With `RAGFLOW_CRYPTO_ENABLED=true`, RAGFlow stores every file as `b"RAGF"`, a 16-byte IV and
the file encrypted in CBC mode with PKCS7 padding (AES-128, AES-256 or SM4). The key is
derived from `RAGFLOW_CRYPTO_KEY` with PBKDF2-HMAC-SHA256, 100,000 iterations and the fixed
salt `b"ragflow_crypto_salt"`. A file without the header is returned as it is, as RAGFlow does.

CBC decrypts block by block, so the stream is decrypted chunk by chunk and only the last
block is held back for the padding: memory stays one chunk, whatever the file's size.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ..errors import FileForbidden
from ..ref import FileRef
from .base import Blob, Storage, rechunk

MAGIC = b"RAGF"
IV_BYTES = BLOCK_BYTES = 16
HEADER_BYTES = len(MAGIC) + IV_BYTES
SALT = b"ragflow_crypto_salt"
ITERATIONS = 100_000
KEY_BYTES = {"aes-128-cbc": 16, "aes-256-cbc": 32, "sm4-cbc": 16}


def derive_key(key: str, algorithm: str) -> bytes:
    """RAGFlow's key for `algorithm` from the configured key text."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES[algorithm], salt=SALT, iterations=ITERATIONS)
    return kdf.derive(key.encode("utf-8"))


class EncryptedStorage:
    """Another storage whose files RAGFlow encrypted: `open` decrypts, `put` encrypts as RAGFlow does."""

    def __init__(self, inner: Storage, *, algorithm: str, key: str) -> None:
        self.inner = inner
        self.algorithm = algorithm
        self._key = derive_key(key, algorithm)  # once per process: the derivation costs tens of milliseconds

    def _cipher(self, iv: bytes) -> Cipher[modes.CBC]:
        cipher = algorithms.SM4(self._key) if self.algorithm == "sm4-cbc" else algorithms.AES(self._key)
        return Cipher(cipher, modes.CBC(iv))

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        blob = self.inner.open(bucket, location, chunk_size=chunk_size)
        try:
            head, rest = _head(blob.chunks, HEADER_BYTES)
        except BaseException:
            blob.close()
            raise
        stream = itertools.chain((head,), rest)
        if not head.startswith(MAGIC):  # stored as it is: RAGFlow returns such data unchanged
            return Blob(blob.size, rechunk(stream, chunk_size), blob.close, version=blob.version)
        ref = FileRef(bucket, location)
        if len(head) < HEADER_BYTES:
            blob.close()
            raise FileForbidden("cannot decrypt: shorter than RAGFlow's header", ref)
        plain = self._decrypt(head[len(MAGIC) : HEADER_BYTES], itertools.chain((head[HEADER_BYTES:],), rest), ref)
        # The padding (1 to 16 bytes) is known only at the end: announce the most the file can be.
        size = max(blob.size - HEADER_BYTES - 1, 0)
        return Blob(size, rechunk(plain, chunk_size), blob.close, version=blob.version, exact=False)

    def _decrypt(self, iv: bytes, ciphertext: Iterator[bytes], ref: FileRef) -> Iterator[bytes]:
        decryptor = self._cipher(iv).decryptor()
        unpadder = padding.PKCS7(BLOCK_BYTES * 8).unpadder()
        for block in ciphertext:
            if out := unpadder.update(decryptor.update(block)):
                yield out
        try:
            last = unpadder.update(decryptor.finalize()) + unpadder.finalize()
        except ValueError:  # not a whole number of blocks, or padding that a wrong key leaves
            reason = f"cannot decrypt with RAGFLOW_CRYPTO_KEY ({self.algorithm}): bad length or padding"
            raise FileForbidden(reason, ref) from None
        if last:
            yield last

    def encrypt(self, data: bytes, iv: bytes | None = None) -> bytes:
        """`data` as RAGFlow stores it encrypted: header, IV, then the padded ciphertext."""
        iv = iv or os.urandom(IV_BYTES)
        padder = padding.PKCS7(BLOCK_BYTES * 8).padder()
        encryptor = self._cipher(iv).encryptor()
        padded = padder.update(data) + padder.finalize()
        return MAGIC + iv + encryptor.update(padded) + encryptor.finalize()

    def stat(self, bucket: str, location: str) -> str:
        """The stored object's version, as `open` gives it: decrypting changes the bytes, not the version."""
        return self.inner.stat(bucket, location)

    def put(self, bucket: str, location: str, data: bytes) -> None:
        self.inner.put(bucket, location, self.encrypt(data))

    def check(self) -> str:
        return f"{self.inner.check()}, decrypting {self.algorithm}"

    def close(self) -> None:
        self.inner.close()


def _head(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """At least `size` bytes from the start of the stream (fewer only if it ends), and the rest of it."""
    head = b""
    while len(head) < size:
        block = next(chunks, None)
        if block is None:
            break
        head += block
    return head, chunks
