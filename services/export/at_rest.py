"""Parts and bundles encrypted at rest, one random data key per export request.

The data key is kept only sealed under the export service key (`parts.KeyVault`, column
`requests.data_key`) and is destroyed when the request ends without a bundle to serve, when its
bundle expires or is deleted, and when an erasure cancels the request: any file left behind
(a failed delete, a backup of the folder) is then unreadable (crypto-shredding).

Format: `MAGIC`, the libsodium secretstream header, then chunks (4-byte big-endian length, then
XChaCha20-Poly1305 ciphertext); the last chunk carries the FINAL tag, so a truncated or
reordered file fails to read instead of reading short.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Iterator
from typing import BinaryIO, cast

from nacl import bindings as sodium
from nacl.exceptions import CryptoError
from nacl.utils import random

from services.export.storage import Storage

MAGIC = b"PPX1"
KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
CHUNK = 64 * 1024
_HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_LENGTH = struct.Struct(">I")


class NotReadable(Exception):
    """A stored object that does not decrypt with the request's key (tampered, truncated, or
    written under another key)."""


def new_data_key() -> bytes:
    """A fresh random data key for one export request."""
    return random(KEY_BYTES)


class _Encrypting(io.RawIOBase):
    """A write-only, unseekable stream encrypting into `out` a chunk at a time."""

    def __init__(self, out: BinaryIO, key: bytes) -> None:
        self._out = out
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        out.write(MAGIC + header)
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            self._push(bytes(self._buffer[:CHUNK]), _MESSAGE)
            del self._buffer[:CHUNK]
        return len(data)

    def finish(self) -> None:
        """The last chunk, tagged FINAL (the reader requires it)."""
        self._push(bytes(self._buffer), _FINAL)
        self._buffer.clear()

    def _push(self, plain: bytes, tag: int) -> None:
        cipher = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, plain, None, tag)
        self._out.write(_LENGTH.pack(len(cipher)) + cipher)


class _Decrypting(io.RawIOBase):
    """A read-only stream of the plaintext of `source`, verified chunk by chunk."""

    def __init__(self, source: BinaryIO, key: bytes) -> None:
        self._source = source
        start = source.read(len(MAGIC) + _HEADER)
        if len(start) != len(MAGIC) + _HEADER or not start.startswith(MAGIC):
            raise NotReadable("not an encrypted export object")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        try:
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(
                self._state, start[len(MAGIC) :], key
            )
        except (CryptoError, ValueError) as exc:
            raise NotReadable("the object's header does not fit the key") from exc
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            self._pending = self._pull()
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _pull(self) -> bytes:
        prefix = self._source.read(_LENGTH.size)
        if len(prefix) != _LENGTH.size:
            raise NotReadable("encrypted object is truncated")
        (length,) = _LENGTH.unpack(prefix)
        if not _ABYTES <= length <= CHUNK + _ABYTES:
            raise NotReadable("encrypted object has a bad chunk length")
        cipher = self._source.read(length)
        if len(cipher) != length:
            raise NotReadable("encrypted object is truncated")
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, cipher, None
            )
        except (CryptoError, ValueError) as exc:
            raise NotReadable("encrypted object does not decrypt with this key") from exc
        if tag == _FINAL:
            if self._source.read(1):
                raise NotReadable("encrypted object has data after its final chunk")
            self._done = True
        return bytes(plain)


class SealedStorage:
    """A `Storage` whose objects are encrypted under one request's data key; deletes pass
    through (they need no key)."""

    def __init__(self, inner: Storage, data_key: bytes) -> None:
        if len(data_key) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        self._inner = inner
        self._key = data_key

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        with self._inner.writer(key) as raw:
            stream = _Encrypting(raw, self._key)
            yield cast(BinaryIO, stream)
            stream.finish()

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        with self._inner.reader(key) as raw:
            yield cast(BinaryIO, io.BufferedReader(_Decrypting(raw, self._key), CHUNK))

    def exists(self, key: str) -> bool:
        return self._inner.exists(key)

    def delete(self, key: str) -> None:
        self._inner.delete(key)

    def delete_prefix(self, prefix: str) -> None:
        self._inner.delete_prefix(prefix)
