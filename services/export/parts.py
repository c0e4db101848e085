"""Receiving parts: open sealed ones, read referenced ones, verify, write them to storage.

A part is kept as JSON Lines (one record a line) so the bundle can stream it later. These are
blocking functions (crypto, files): callers run them in a worker thread.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import orjson
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.utils import random

from services.export.storage import Storage
from shared.contract.sealing import open_sealed

CHUNK = 64 * 1024


class PartError(Exception):
    """The part cannot be taken (bad checksum, unreadable, refused location): the part fails."""


class KeyVault:
    """Request private keys at rest: encrypted under the service key (XSalsa20-Poly1305)."""

    def __init__(self, service_key: bytes) -> None:
        self._box = SecretBox(service_key)

    def seal(self, private_key: bytes) -> bytes:
        """The private key, encrypted for storage."""
        return bytes(self._box.encrypt(private_key, random(SecretBox.NONCE_SIZE)))

    def open(self, sealed_key: bytes) -> bytes:
        """The private key back (CryptoError if it was not sealed under this service key)."""
        return bytes(self._box.decrypt(sealed_key))


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
        raise PartError("sealed part cannot be opened with this request's key") from exc
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
    url = urlsplit(location)
    if url.scheme != "file":
        raise PartError(f"location scheme {url.scheme!r} refused: only file:// is accepted")
    if url.netloc not in ("", "localhost"):
        raise PartError("location must be a local file:// URL (no host)")
    root = exchange_dir.resolve()
    path = Path(unquote(url.path)).resolve()
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
    if path.exists() and not path.is_file():
        raise PartError("location is not a regular file")
    if path.is_file() and (size := path.stat().st_size) > max_bytes:
        raise PartError(f"referenced part is {size} bytes, over the size limit of {max_bytes}")
    hasher = _LimitedHasher(max_bytes)  # the file may grow while it is read
    count = 0
    try:
        source = path.open("rb")
    except OSError as exc:
        raise PartError(f"location cannot be read: {os.strerror(exc.errno or 0)}") from exc
    with source, storage.writer(key) as out:
        for record in iter_array(source, hasher):
            out.write(_line(record))
            count += 1
        if hasher.hexdigest() != sha256:
            raise PartError(f"sha256 mismatch: part says {sha256}, file is {hasher.hexdigest()}")
        _check_count(count, record_count)
    return count


def _line(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record) + b"\n"
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise PartError(f"a record cannot be kept as JSON: {exc}") from exc


def _check_count(found: int, declared: int | None) -> None:
    if declared is not None and declared != found:
        raise PartError(f"record_count says {declared}, the part holds {found}")


def iter_array(stream: BinaryIO, hasher: Any) -> Iterator[dict[str, Any]]:
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
        if not isinstance(record, dict):
            raise PartError("a part must be a JSON array of objects")
        pos, expect_value, seen = end, False, seen + 1
        yield record
    if skip_space() != "":
        raise PartError("referenced part has data after the array")
