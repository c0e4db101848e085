"""Receiving parts: open sealed ones, read referenced ones, verify, write them to storage.

A part is kept as JSON Lines (one record a line) so the bundle can stream it later. These are
blocking functions (crypto, files): callers run them in a worker thread. Whatever goes wrong
with what an owner gave (a location, its file, its content) is a `PartError`, so the part fails
with the reason; only failures of our own storage leave as other errors (to be retried).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import orjson
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.utils import random

from services.export.storage import Storage
from shared.contract.sealing import open_sealed
from shared.plumbing.keyring import KID, LEGACY_KID

CHUNK = 64 * 1024


class PartError(Exception):
    """The part cannot be taken (bad checksum, unreadable, refused location): the part fails."""


class SealedForAnotherKey(PartError):
    """The part does not open with the request's key (after a restore: sealed to the old one)."""


class RetiredKey(CryptoError):
    """A sealed key names a service key that is no longer listed: it cannot be opened."""


class KeyVault:
    """Request private keys at rest: encrypted under the service key (XSalsa20-Poly1305).

    The service key may be a keyring (kid -> 32 bytes, current first): `seal` uses the current
    key and writes its kid in front of the box (`SEALED_PREFIX`, kid length, kid); `open` uses
    the key that kid names. A key sealed before keys had ids (no prefix) is tried under each.
    """

    def __init__(self, service_key: bytes | Sequence[tuple[str, bytes]]) -> None:
        keys = [(LEGACY_KID, service_key)] if isinstance(service_key, bytes) else service_key
        self._boxes = {kid: SecretBox(key) for kid, key in keys}
        self._current = keys[0][0]

    @property
    def current_kid(self) -> str:
        """The id of the key new seals use."""
        return self._current

    def seal(self, private_key: bytes) -> bytes:
        """The private key, encrypted for storage under the current key (its kid in front)."""
        kid = self._current.encode()
        box = self._boxes[self._current].encrypt(private_key, random(SecretBox.NONCE_SIZE))
        return SEALED_PREFIX + bytes([len(kid)]) + kid + bytes(box)

    def open(self, sealed_key: bytes) -> bytes:
        """The private key back (CryptoError if no listed service key sealed it)."""
        kid, box = _split_sealed(sealed_key)
        if kid is not None:
            found = self._boxes.get(kid)
            if found is None:
                raise RetiredKey(f"sealed under service key {kid!r}, which is not listed")
            return bytes(found.decrypt(box))
        for candidate in self._boxes.values():
            try:
                return bytes(candidate.decrypt(sealed_key))
            except CryptoError:
                continue
        raise CryptoError("no listed service key opens this sealed key")


SEALED_PREFIX = b"\x00kid\x00"
"""Starts a sealed key that names its kid (a legacy box starts with a random nonce instead)."""


def _split_sealed(sealed_key: bytes) -> tuple[str | None, bytes]:
    """(kid, box) of a sealed key that names its kid, else (None, the whole legacy box)."""
    if not sealed_key.startswith(SEALED_PREFIX) or len(sealed_key) <= len(SEALED_PREFIX):
        return None, sealed_key
    start = len(SEALED_PREFIX) + 1
    end = start + sealed_key[len(SEALED_PREFIX)]
    try:
        kid = sealed_key[start:end].decode("ascii")
    except UnicodeDecodeError:
        return None, sealed_key
    if not KID.fullmatch(kid):
        return None, sealed_key  # a legacy nonce that happens to start like the prefix
    return kid, sealed_key[end:]


def store_inline(
    storage: Storage,
    key: str,
    private_key: bytes,
    sealed: str,
    sha256: str,
    record_count: int | None,
) -> int:
    """Open a sealed part, verify it, write it as JSON Lines under `key`; returns its records."""
    try:
        plaintext = open_sealed(private_key, sealed)
    except (CryptoError, ValueError) as exc:
        raise SealedForAnotherKey("sealed part cannot be opened with this request's key") from exc
    digest = hashlib.sha256(plaintext).hexdigest()
    if digest != sha256:
        raise PartError(f"sha256 mismatch: part says {sha256}, plaintext is {digest}")
    try:
        records = orjson.loads(plaintext)
    except orjson.JSONDecodeError as exc:
        raise PartError("sealed part is not JSON") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise PartError("a part must be a JSON array of objects")
    _check_count(len(records), record_count)
    with storage.writer(key) as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
    return len(records)


def resolve_location(exchange_dir: Path, location: str) -> Path:
    """The file a `file://` location names, only if it lies under the exchange folder."""
    try:
        url = urlsplit(location)
    except ValueError as exc:  # e.g. an unclosed "[" in the host
        raise PartError(f"location is not a URL: {exc}") from exc
    if url.scheme != "file":
        raise PartError(f"location scheme {url.scheme!r} refused: only file:// is accepted")
    if url.netloc not in ("", "localhost"):
        raise PartError("location must be a local file:// URL (no host)")
    root = exchange_dir.resolve()
    try:
        path = Path(unquote(url.path)).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # too long, a NUL byte, a symlink loop
        raise PartError(f"location cannot be resolved: {_why(exc)}") from exc
    if not path.is_relative_to(root):
        raise PartError("location is outside the exchange folder")
    return path


class _LimitedHasher:
    """SHA-256 of what is read, failing the part once more than `limit` bytes came."""

    def __init__(self, limit: int) -> None:
        self._sha = hashlib.sha256()
        self._limit = limit
        self._seen = 0

    def update(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        if self._seen > self._limit:
            raise PartError(_too_big(self._seen, self._limit))
        self._sha.update(chunk)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _too_big(size: int, limit: int) -> str:
    return f"referenced part is over the size limit ({size} bytes read, limit {limit} bytes)"


def store_reference(
    storage: Storage,
    key: str,
    exchange_dir: Path,
    location: str,
    sha256: str,
    record_count: int | None,
    max_bytes: int = 512 * 1024 * 1024,
) -> int:
    """Stream a referenced part into storage, verifying its sha256; returns its records."""
    path = resolve_location(exchange_dir, location)
    return store_file(storage, key, path, sha256, record_count, max_bytes)


def store_file(
    storage: Storage,
    key: str,
    path: Path,
    sha256: str,
    record_count: int | None,
    max_bytes: int = 512 * 1024 * 1024,
) -> int:
    """Stream a resolved exchange file into storage, verifying its sha256; returns its records."""
    hasher = _LimitedHasher(max_bytes)  # the file may grow while it is read
    count = 0
    with OwnerFile.open(path, max_bytes) as source, storage.writer(key) as out:
        try:
            for record in iter_array(source, hasher):
                out.write(_line(record))
                count += 1
        except PartError:
            source.check_unchanged(read_all=False)  # a change explains the failure better
            raise
        source.check_unchanged(read_all=True)
        if hasher.hexdigest() != sha256:
            raise PartError(f"sha256 mismatch: part says {sha256}, file is {hasher.hexdigest()}")
        _check_count(count, record_count)
    return count


def _why(exc: BaseException) -> str:
    """An error about the input, in words (no path: the owner knows which one it gave)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc)[:200] or type(exc).__name__


class OwnerFile:
    """An owner's file in the exchange folder, read so that nothing about it can leave as an
    OSError: not found, denied, a FIFO or device, a symlink swapped in, a read failing, a size
    changing while read — each is a PartError (the part fails, the consumer goes on)."""

    def __init__(self, fd: int, opened: os.stat_result) -> None:
        self._fd = fd
        self._stream = os.fdopen(fd, "rb")
        self._opened = opened
        self._read = 0

    @classmethod
    def open(cls, path: Path, max_bytes: int) -> OwnerFile:
        """The regular file at `path` (already resolved), within `max_bytes`."""
        # O_NONBLOCK: opening a FIFO to read would wait for a writer; O_NOFOLLOW: the path was
        # checked resolved, so a symlink there now was swapped in since.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except (OSError, ValueError) as exc:
            raise PartError(f"location cannot be read: {_why(exc)}") from exc
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise PartError("location is not a regular file")
            if opened.st_size > max_bytes:
                raise PartError(
                    f"referenced part is {opened.st_size} bytes, over the size limit of {max_bytes}"
                )
            os.set_blocking(fd, True)
            return cls(fd, opened)
        except OSError as exc:
            os.close(fd)
            raise PartError(f"location cannot be read: {_why(exc)}") from exc
        except BaseException:
            os.close(fd)
            raise

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; PartError if the file cannot be read."""
        try:
            chunk = self._stream.read(size)
        except (OSError, ValueError) as exc:
            raise PartError(f"location cannot be read: {_why(exc)}") from exc
        self._read += len(chunk)
        return chunk

    def check_unchanged(self, *, read_all: bool) -> None:
        """PartError if the file was written to while it was read (`read_all`: to its end)."""
        try:
            now = os.fstat(self._fd)
        except OSError as exc:
            raise PartError(f"location cannot be read: {_why(exc)}") from exc
        was = self._opened
        moved = (now.st_size, now.st_mtime_ns) != (was.st_size, was.st_mtime_ns)
        if moved or self._read > was.st_size or (read_all and self._read != was.st_size):
            raise PartError(
                f"referenced part changed while it was read ({was.st_size} bytes when opened, "
                f"{now.st_size} bytes after, {self._read} bytes read)"
            )

    def __enter__(self) -> OwnerFile:
        return self

    def __exit__(self, *_: object) -> None:
        self._stream.close()


def _line(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record) + b"\n"
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise PartError(f"a record cannot be kept as JSON: {exc}") from exc


def _check_count(found: int, declared: int | None) -> None:
    if declared is not None and declared != found:
        raise PartError(f"record_count says {declared}, the part holds {found}")


def iter_array(stream: BinaryIO | OwnerFile, hasher: Any) -> Iterator[dict[str, Any]]:
    """The objects of a JSON array read from `stream` a chunk at a time (hashing every byte)."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")()
    buffer, pos, eof = "", 0, False

    def fill() -> bool:
        nonlocal buffer, pos, eof
        chunk = stream.read(CHUNK)
        hasher.update(chunk)
        eof = not chunk
        try:
            buffer = buffer[pos:] + text.decode(chunk, final=eof)
        except UnicodeDecodeError as exc:
            raise PartError("referenced part is not UTF-8") from exc
        pos = 0
        return not eof

    def skip_space() -> str:
        nonlocal pos
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n":
                pos += 1
            if pos < len(buffer):
                return buffer[pos]
            if not fill():
                return ""

    if skip_space() != "[":
        raise PartError("referenced part is not a JSON array")
    pos += 1
    expect_value, seen = True, 0
    while True:
        char = skip_space()
        if char == "]" and (not expect_value or seen == 0):
            pos += 1
            break
        if char == "":
            raise PartError("referenced part ends inside the array")
        if not expect_value:
            if char != ",":
                raise PartError("referenced part: expected ',' between records")
            pos += 1
            expect_value = True
            continue
        while True:
            try:
                record, end = decoder.raw_decode(buffer, pos)
                break
            except json.JSONDecodeError as exc:
                if eof or not fill():
                    raise PartError("referenced part holds invalid JSON") from exc
            except (ValueError, RecursionError) as exc:  # over 4300 digits, nested too deep
                reason = f"referenced part holds a record that cannot be read: {exc}"
                raise PartError(reason) from exc
        if not isinstance(record, dict):
            raise PartError("a part must be a JSON array of objects")
        pos, expect_value, seen = end, False, seen + 1
        yield record
    if skip_space() != "":
        raise PartError("referenced part has data after the array")
