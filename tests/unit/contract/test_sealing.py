"""Sealed export parts open with the request's key only."""

from __future__ import annotations

import pytest
from nacl.exceptions import CryptoError

from shared.contract.sealing import (
    chunk_records,
    new_keypair,
    open_sealed,
    records_bytes,
    records_sha256,
    seal_records,
)


def test_a_sealed_part_opens_with_its_private_key_and_matches_its_digest():
    private, public = new_keypair()
    records: list[dict[str, object]] = [{"id": 1, "email": "a@example.com"}, {"id": 2}]
    sealed, digest = seal_records(public, records)
    assert open_sealed(private, sealed) == records_bytes(records)
    assert digest == records_sha256(records)


def test_another_key_cannot_open_a_part():
    _, public = new_keypair()
    other_private, _ = new_keypair()
    sealed, _ = seal_records(public, [{"id": 1}])
    with pytest.raises(CryptoError):
        open_sealed(other_private, sealed)


def test_chunks_stay_under_the_size_limit_and_keep_every_record():
    records = [{"n": i, "text": "x" * 100} for i in range(1000)]
    chunks = chunk_records(records, max_bytes=10_000)
    assert len(chunks) > 1
    assert [r for chunk in chunks for r in chunk] == records
    assert all(len(records_bytes(chunk)) <= 10_000 for chunk in chunks)
