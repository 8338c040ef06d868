"""RAGFlow's encryption at rest: files encrypted as RAGFlow's `common/crypto_utils.py` does are read decrypted."""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from cachetasks.errors import FileForbidden
from cachetasks.storage import Blob, MemoryStorage
from cachetasks.storage.encrypted import EncryptedStorage

KEY = "correct horse battery staple"
IV = bytes(range(16))


def ragflow_encrypt(data: bytes, key: str, algorithm: str, iv: bytes) -> bytes:
    """`CryptoUtil(algorithm, key, iv).encrypt(data)` in RAGFlow, step by step as its source has it:
    PBKDF2-HMAC-SHA256 over the UTF-8 key with the salt b"ragflow_crypto_salt" and 100,000 iterations,
    PKCS7 padding to 16 bytes, CBC, and b"RAGF" + IV + ciphertext."""
    length = {"aes-128-cbc": 16, "aes-256-cbc": 32, "sm4-cbc": 16}[algorithm]
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=length, salt=b"ragflow_crypto_salt", iterations=100000)
    derived = kdf.derive(key.encode("utf-8"))
    padder = padding.PKCS7(16 * 8).padder()
    padded = padder.update(data) + padder.finalize()
    cipher = algorithms.SM4(derived) if algorithm == "sm4-cbc" else algorithms.AES(derived)
    encryptor = Cipher(cipher, modes.CBC(iv)).encryptor()
    return b"RAGF" + iv + encryptor.update(padded) + encryptor.finalize()


def read(storage: EncryptedStorage, chunk_size: int = 1000) -> tuple[int, list[bytes]]:
    with storage.open("kb1", "doc.pdf", chunk_size=chunk_size) as blob:
        return blob.size, list(blob.chunks)


@pytest.mark.parametrize("algorithm", ["aes-128-cbc", "aes-256-cbc", "sm4-cbc"])
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 999, 1000, 4096, 10_007])
def test_a_file_ragflow_encrypted_is_read_decrypted_in_exact_chunks(algorithm: str, length: int) -> None:
    """Whatever its length against the block and chunk sizes, the plaintext comes back in chunks of the asked size."""
    # Given a file stored as RAGFlow stores it encrypted
    data = bytes((i * 7) % 256 for i in range(length))
    inner = MemoryStorage()
    inner.put("kb1", "doc.pdf", ragflow_encrypt(data, KEY, algorithm, IV))
    # When
    size, chunks = read(EncryptedStorage(inner, algorithm=algorithm, key=KEY))
    # Expect
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [1000] * (length // 1000) + ([length % 1000] if length % 1000 else [])
    assert length <= size <= length + 15


def test_the_key_derivation_matches_a_known_ciphertext() -> None:
    """A ciphertext computed once by RAGFlow's recipe decrypts: the salt, iterations and header are RAGFlow's."""
    # Given AES-256-CBC of b"Hello, RAGFlow!" with key "test_key_123456" and IV 00..0f (RAGFlow's own test values)
    stored = bytes.fromhex("52414746000102030405060708090a0b0c0d0e0fa8766f75b1ed908b8e66f79aafcac72e")
    inner = MemoryStorage()
    inner.put("kb1", "doc.pdf", stored)
    # When
    _, chunks = read(EncryptedStorage(inner, algorithm="aes-256-cbc", key="test_key_123456"))
    # Expect
    assert b"".join(chunks) == b"Hello, RAGFlow!"
    assert ragflow_encrypt(b"Hello, RAGFlow!", "test_key_123456", "aes-256-cbc", IV) == stored


def test_our_encryption_is_ragflows() -> None:
    """`put` stores what RAGFlow would store for the same IV, so RAGFlow reads files the demo and tests write."""
    storage = EncryptedStorage(MemoryStorage(), algorithm="aes-256-cbc", key=KEY)
    assert storage.encrypt(b"some bytes", IV) == ragflow_encrypt(b"some bytes", KEY, "aes-256-cbc", IV)


def test_a_file_without_ragflows_header_is_read_as_it_is() -> None:
    """Data stored before encryption was turned on has no header and comes back unchanged, as in RAGFlow."""
    # Given
    inner = MemoryStorage()
    inner.put("kb1", "doc.pdf", b"plain old bytes" * 100)
    # When
    size, chunks = read(EncryptedStorage(inner, algorithm="aes-256-cbc", key=KEY), chunk_size=64)
    # Expect
    assert (size, b"".join(chunks)) == (1500, b"plain old bytes" * 100)
    assert {len(c) for c in chunks[:-1]} == {64}


@pytest.mark.parametrize(
    "stored",
    [
        ragflow_encrypt(b"x" * 100, "another key", "aes-256-cbc", IV),
        ragflow_encrypt(b"x" * 100, KEY, "aes-256-cbc", IV)[:-5],
        b"RAGF" + IV[:8],
    ],
    ids=["wrong key", "cut short", "header only"],
)
def test_a_file_that_does_not_decrypt_is_file_forbidden(stored: bytes) -> None:
    """A wrong key or a damaged file is FileForbidden (permanent), never garbage in the cache."""
    inner = MemoryStorage()
    inner.put("kb1", "doc.pdf", stored)
    with pytest.raises(FileForbidden):
        read(EncryptedStorage(inner, algorithm="aes-256-cbc", key=KEY))


class _Counting(MemoryStorage):
    """A storage that counts the chunks its readers have pulled."""

    def __init__(self) -> None:
        super().__init__()
        self.pulled: collections.Counter[str] = collections.Counter()

    def open(self, bucket: str, location: str, *, chunk_size: int) -> Blob:
        blob = super().open(bucket, location, chunk_size=chunk_size)

        def counted() -> Iterator[bytes]:
            for chunk in blob.chunks:
                self.pulled["chunks"] += 1
                yield chunk

        return Blob(blob.size, counted(), blob.close, version=blob.version)


def test_decryption_streams_a_large_file_chunk_by_chunk() -> None:
    """Reading the first plaintext chunk of a 2 MiB file pulls about one stored chunk, not the whole file."""
    # Given
    inner = _Counting()
    inner.put("kb1", "doc.pdf", ragflow_encrypt(b"\x01" * (2 * 1024 * 1024), KEY, "aes-256-cbc", IV))
    storage = EncryptedStorage(inner, algorithm="aes-256-cbc", key=KEY)
    # When
    with storage.open("kb1", "doc.pdf", chunk_size=64 * 1024) as blob:
        first = next(blob.chunks)
        pulled = inner.pulled["chunks"]
        rest = sum(len(c) for c in blob.chunks)
    # Expect
    assert len(first) == 64 * 1024
    assert pulled <= 3, f"{pulled} stored chunks read for the first one"
    assert len(first) + rest == 2 * 1024 * 1024
