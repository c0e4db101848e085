"""Sealed boxes for inline export parts (libsodium through PyNaCl).

Owners seal a part's JSON records to the export job's public key; only the export service,
while the request is open, holds the private key. When the request ends the key is destroyed
and every copy of the part left in Kafka becomes unreadable (crypto-shredding).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
from nacl.public import PrivateKey, PublicKey, SealedBox

from .events import ExportJobData, ExportPartData


def new_keypair() -> tuple[bytes, str]:
    """A fresh (private key bytes, base64 public key) pair for one request."""
    private = PrivateKey.generate()
    return bytes(private), base64.b64encode(bytes(private.public_key)).decode()


def records_bytes(records: list[dict[str, Any]]) -> bytes:
    """The canonical plaintext of a list of records: what `sha256` in a part covers."""
    return orjson.dumps(records, option=orjson.OPT_SORT_KEYS)


def records_sha256(records: list[dict[str, Any]]) -> str:
    """Hex SHA-256 of the canonical plaintext of `records`."""
    return hashlib.sha256(records_bytes(records)).hexdigest()


def seal_records(public_key_b64: str, records: list[dict[str, Any]]) -> tuple[str, str]:
    """Seal `records` to a job's public key: (base64 sealed box, sha256 of the plaintext)."""
    plaintext = records_bytes(records)
    box = SealedBox(PublicKey(base64.b64decode(public_key_b64)))
    sealed = base64.b64encode(box.encrypt(plaintext)).decode()
    return sealed, hashlib.sha256(plaintext).hexdigest()


def open_sealed(private_key: bytes, sealed_b64: str) -> bytes:
    """The plaintext of a sealed part; raises nacl.exceptions.CryptoError if it is not ours."""
    return SealedBox(PrivateKey(private_key)).decrypt(base64.b64decode(sealed_b64))


def chunk_records(
    records: list[dict[str, Any]], max_bytes: int = 256 * 1024
) -> list[list[dict[str, Any]]]:
    """Split records into chunks whose plaintext stays under `max_bytes` (one part each)."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 2
    for record in records:
        length = len(orjson.dumps(record)) + 1
        if chunks[-1] and size + length > max_bytes:
            chunks.append([])
            size = 2
        chunks[-1].append(record)
        size += length
    return chunks


def sealed_parts(
    job: ExportJobData,
    category: str,
    records: list[dict[str, Any]],
    *,
    max_bytes: int = 256 * 1024,
    record_schema: str | None = None,
) -> list[ExportPartData]:
    """An owner's whole answer for one category of a job: numbered, sealed parts.

    No records gives one part with zero records (the owner has no data: the export still
    knows the owner answered). Publish each as `export.part.v1` keyed by the job's subject.
    """
    chunks = chunk_records(records, max_bytes) if records else [[]]
    parts = []
    for index, chunk in enumerate(chunks):
        sealed, digest = seal_records(job.public_key, chunk)
        parts.append(
            ExportPartData(
                job_id=job.job_id,
                request_id=job.request_id,
                owner=job.owner,
                category=category,
                part_index=index,
                part_count=len(chunks),
                sealed=sealed,
                sha256=digest,
                record_count=len(chunk),
                record_schema=record_schema,
            )
        )
    return parts
