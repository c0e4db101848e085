"""Deletion certificates and the hash chain that shows one altered or removed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime

from services.retention.domain.model import Frozen


class Certificate(Frozen):
    """A deletion certificate: ids and times only, never personal data."""

    job_id: str
    subject_id: str
    owner: str
    category: str
    mode: str
    reason: str
    request_id: str | None
    attempt: int
    issued_at: datetime
    completed_at: datetime
    records_deleted: int
    receipt_id: str


GENESIS = "0" * 64


def certificate_hash(prev_hash: str, cert: Certificate) -> str:
    """The chain link: sha256 over the previous hash and the certificate's canonical JSON."""
    body = json.dumps(cert.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\x1f{body}".encode()).hexdigest()


def verify_chain(links: Iterable[tuple[Certificate, str, str]]) -> list[str]:
    """Problems in a certificate chain of (certificate, prev_hash, hash) in order; [] if intact."""
    problems = []
    expected_prev = GENESIS
    for cert, prev_hash, stored in links:
        if prev_hash != expected_prev:
            problems.append(f"{cert.job_id}: chain broken before it (a certificate was removed)")
        if certificate_hash(prev_hash, cert) != stored:
            problems.append(f"{cert.job_id}: content does not match its hash (altered)")
        expected_prev = stored
    return problems
