"""Checkpoints: a signed Merkle root over a log's entries since the previous one (pure).

A checkpoint names its log, its number, the range of the log's global sequence it covers
(`after_seq` < seq <= `upto_seq`), the Merkle root and a short fingerprint of every leaf (so
a verifier can name the first entry that differs, not only the range), the previous
checkpoint's hash (checkpoints chain) and, after a restore from backup, the fork it records.
Its hash is SHA-256 over its canonical JSON body; the Ed25519 signature covers that body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from shared.evidence import merkle
from shared.evidence.signing import Signer

GENESIS = "0" * 64
FINGERPRINT = 8
"""Hex digits of each leaf kept in a checkpoint: enough to point at a changed entry (the
root, not the fingerprints, is what proves the range)."""


@dataclass(frozen=True)
class Fork:
    """A restore from backup: history after the restored head was re-derived."""

    restored_at: str
    backup_taken_at: str


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint of a log (the `audit.checkpoint.v1` event's data)."""

    log: str
    number: int
    after_seq: int
    upto_seq: int
    count: int
    root: str
    leaves: str
    prev_hash: str
    created_at: str
    key_id: str
    fork: Fork | None = None
    hash: str = ""
    signature: str = ""

    def body(self) -> bytes:
        """The canonical bytes that are hashed and signed (everything but hash and signature)."""
        values = asdict(self)
        del values["hash"], values["signature"]
        return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()

    def record(self) -> dict[str, Any]:
        """The checkpoint as JSON-ready data (event data, table row, export line)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint of `record()` (unknown keys are ignored)."""
        values = {k: record[k] for k in cls.__dataclass_fields__ if k in record}
        fork = values.get("fork")
        if isinstance(fork, Mapping):
            values["fork"] = Fork(str(fork["restored_at"]), str(fork["backup_taken_at"]))
        return cls(**values)


@dataclass(frozen=True)
class Leaf:
    """A log entry as the checkpointer or a verifier sees it."""

    seq: int
    hash: str
    label: str = ""
    """How to name the entry to a person (subject, sequence, event id)."""
    problem: str | None = None
    """What the entry's own chain check found wrong, if anything."""


def fingerprints(entry_hashes: Sequence[str]) -> str:
    """The leaves' fingerprints, concatenated."""
    return "".join(h[:FINGERPRINT] for h in entry_hashes)


@dataclass(frozen=True)
class Previous:
    """What a new checkpoint chains to: the last one's number, hash and covered sequence."""

    number: int = 0
    hash: str = GENESIS
    upto_seq: int = 0


def make_checkpoint(
    signer: Signer,
    log: str,
    previous: Previous,
    leaves: Sequence[Leaf],
    created_at: datetime,
    fork: Fork | None = None,
) -> Checkpoint:
    """The signed checkpoint over `leaves` (in sequence order, all after `previous`)."""
    hashes = [leaf.hash for leaf in leaves]
    unsigned = Checkpoint(
        log=log,
        number=previous.number + 1,
        after_seq=previous.upto_seq,
        upto_seq=leaves[-1].seq if leaves else previous.upto_seq,
        count=len(leaves),
        root=merkle.root(hashes),
        leaves=fingerprints(hashes),
        prev_hash=previous.hash,
        created_at=created_at.isoformat(),
        key_id=signer.key_id,
        fork=fork,
    )
    body = unsigned.body()
    return Checkpoint(
        **{
            **{k: getattr(unsigned, k) for k in Checkpoint.__dataclass_fields__},
            "hash": hashlib.sha256(body).hexdigest(),
            "signature": signer.sign(body),
        }
    )


@dataclass
class Branch:
    """The signed checkpoints a verifier trusts: the live chain, forks, what was superseded."""

    live: list[Checkpoint] = field(default_factory=list)
    superseded: list[Checkpoint] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    """Why each published checkpoint that did not verify was left out."""
    broken: str | None = None
    """Set when the live chain does not reach back to the first checkpoint."""

    @property
    def forks(self) -> list[Checkpoint]:
        """Live checkpoints that record a restore."""
        return [c for c in self.live if c.fork is not None]
