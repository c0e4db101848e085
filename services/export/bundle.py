"""Writing a bundle: a zip streamed record by record from the stored parts (blocking I/O)."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson

from services.export.domain import FORMAT_VERSION, CategoryInfo, Settled, default_schema, zip_name
from services.export.part_store import StoredPart
from services.export.storage import Storage, part_key
from shared.plumbing.seams import SyncSeam, reach_sync

FLUSH_AT = 256 * 1024

mid_zip: SyncSeam | None = None
"""Test seam (shared.plumbing.seams): called after each file of the zip, mid-write."""


@dataclass(frozen=True)
class BundleInput:
    """Everything a bundle is made of."""

    request_id: str
    subject: str
    storage_key: str
    generated_at: datetime
    status: str
    parts: Sequence[StoredPart]
    settled: Sequence[Settled]
    information: dict[str, CategoryInfo]
    disclosures: Sequence[dict[str, Any]] = ()


def write_bundle(storage: Storage, key: str, bundle: BundleInput) -> dict[str, Any]:
    """Write the zip under `key`; returns its manifest."""
    groups: dict[tuple[str, str], list[StoredPart]] = {}
    for part in bundle.parts:
        groups.setdefault((part.owner, part.category), []).append(part)
    exported = {(s.owner, s.category) for s in bundle.settled if s.outcome == "exported"}
    files = []
    storage.delete(key)  # and the half-written zip of an attempt killed mid-write
    with (
        storage.writer(key) as raw,
        zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for (owner, category), parts in sorted(groups.items()):
            if (owner, category) not in exported:
                continue  # a failed or incomplete category is named, never half-included
            name = zip_name(owner, category)
            with archive.open(name, "w", force_zip64=True) as entry:
                digest, count = _write_records(storage, bundle.storage_key, parts, entry)
            reach_sync(mid_zip)
            schema = next((p.record_schema for p in parts if p.record_schema), None)
            files.append(
                {
                    "path": name,
                    "owner": owner,
                    "category": category,
                    "record_count": count,
                    "sha256": digest,
                    "schema": schema or default_schema(owner, category),
                    "parts": [
                        {
                            "part_index": p.part_index,
                            "record_count": p.record_count,
                            "sha256": p.sha256,
                        }
                        for p in parts
                    ],
                }
            )
        info = {c: i.model_dump() for c, i in sorted(bundle.information.items())}
        told: dict[str, Any] = {"categories": info}
        if bundle.disclosures:  # policy 3.2: only those not under secrecy (told() decided)
            told["disclosures"] = list(bundle.disclosures)
        archive.writestr("information.json", orjson.dumps(told, option=orjson.OPT_INDENT_2))
        manifest = {
            "format": "privacy-plane-export",
            "format_version": FORMAT_VERSION,
            "request_id": bundle.request_id,
            "subject": bundle.subject,
            "generated_at": bundle.generated_at.isoformat(),
            "status": bundle.status,
            "files": files,
            "not_included": [
                s.model_dump(exclude={"records"}) for s in bundle.settled if s.outcome != "exported"
            ],
            # policy 5.1 with 5.3: what an erasure took out while the export was open, and why
            "erased": [
                {"owner": s.owner, "category": s.category, "reason": s.reason}
                for s in bundle.settled
                if s.outcome == "erased"
            ],
            "information": "information.json",
        }
        archive.writestr("manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def _write_records(
    storage: Storage, storage_key: str, parts: Sequence[StoredPart], entry: IO[bytes]
) -> tuple[str, int]:
    """Stream the parts' records into one JSON array; returns (sha256, records)."""
    hasher = hashlib.sha256()
    buffer = bytearray(b"[")
    count = 0

    def flush() -> None:
        hasher.update(buffer)
        entry.write(buffer)
        buffer.clear()

    for part in parts:
        with storage.reader(
            part_key(storage_key, part.owner, part.category, part.part_index)
        ) as src:
            for line in src:
                record = line.rstrip(b"\n")
                if not record:
                    continue
                buffer += b",\n" if count else b"\n"
                buffer += record
                count += 1
                if len(buffer) >= FLUSH_AT:
                    flush()
    buffer += b"\n]\n" if count else b"]\n"
    flush()
    return hasher.hexdigest(), count
