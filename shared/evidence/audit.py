"""Check a log's entries against its signed checkpoints, with only public keys (pure).

The checkpoints come from outside the database (the `privacy.audit` topic or an export of
it); the entries come from the database, each hash recomputed from the entry's own fields.
`trusted_branch` keeps the checkpoints whose hash and signature hold and follows the chain back
from the newest: that is the live history, with the restores it records as forks; signed
checkpoints off that chain were superseded by a restore. `LogAudit` then takes the entries in
sequence order and names the first that is not what the checkpoints signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shared.evidence import merkle
from shared.evidence.checkpoint import FINGERPRINT, GENESIS, Branch, Checkpoint, Leaf
from shared.evidence.signing import Verifier


def checkpoint_problem(checkpoint: Checkpoint, verifier: Verifier) -> str | None:
    """None if the checkpoint's hash and signature hold; else what is wrong."""
    body = checkpoint.body()
    if hashlib.sha256(body).hexdigest() != checkpoint.hash:
        return f"checkpoint {checkpoint.number} does not match its hash"
    problem = verifier.check(checkpoint.key_id, body, checkpoint.signature)
    return None if problem is None else f"checkpoint {checkpoint.number}: {problem}"


def trusted_branch(published: Iterable[Checkpoint], verifier: Verifier, log: str) -> Branch:
    """The live chain of `log`'s signed checkpoints (published order), back from the newest."""
    branch = Branch()
    by_hash: dict[str, Checkpoint] = {}
    newest: Checkpoint | None = None
    for checkpoint in published:
        if checkpoint.log != log or checkpoint.hash in by_hash:
            continue  # another log, or published twice (the relay is at-least-once)
        problem = checkpoint_problem(checkpoint, verifier)
        if problem is not None:
            branch.rejected.append(problem)
            continue
        by_hash[checkpoint.hash] = newest = checkpoint
    live: list[Checkpoint] = []
    at = newest
    while at is not None:
        live.append(at)
        if at.prev_hash == GENESIS:
            break
        parent = by_hash.get(at.prev_hash)
        if parent is None:
            branch.broken = f"checkpoint {at.number} chains to a checkpoint that was not published"
        at = parent
    branch.live = live[::-1]
    on_branch = {c.hash for c in live}
    branch.superseded = [c for c in by_hash.values() if c.hash not in on_branch]
    return branch


@dataclass
class Report:
    """What an audit found: the first bad entry (if any) and how much the checkpoints cover."""

    checked: int = 0
    covered: int = 0
    uncovered: int = 0
    """Entries newer than the last checkpoint: not yet protected."""
    bad_entry: str | None = None
    reason: str | None = None
    forks: list[Checkpoint] = field(default_factory=list)
    superseded: list[Checkpoint] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return self.reason is None


class LogAudit:
    """Feed a log's entries in sequence order; `finish` returns the report."""

    def __init__(self, branch: Branch) -> None:
        self._live: Sequence[Checkpoint] = branch.live
        self._at = 0
        self._hashes: list[str] = []
        self._last: Leaf | None = None
        self.report = Report(forks=branch.forks, superseded=branch.superseded)
        if branch.broken:
            self.report.reason = branch.broken

    def feed(self, leaf: Leaf) -> None:
        """Check one entry (in increasing `seq`)."""
        report = self.report
        if not report.ok:
            return
        report.checked += 1
        if leaf.problem is not None:
            self._fail(leaf.label, leaf.problem)
            return
        while self._at < len(self._live) and leaf.seq > self._live[self._at].upto_seq:
            if not self._close(leaf):
                return
        if self._at == len(self._live):
            report.uncovered += 1
            return
        checkpoint = self._live[self._at]
        position = len(self._hashes)
        if leaf.seq <= checkpoint.after_seq:
            self._fail(leaf.label, "is covered by no checkpoint (inserted after the fact)")
            return
        if position >= checkpoint.count:
            self._fail(leaf.label, f"was added to checkpoint {checkpoint.number}'s range")
            return
        signed = checkpoint.leaves[position * FINGERPRINT : (position + 1) * FINGERPRINT]
        if leaf.hash[:FINGERPRINT] != signed:
            self._fail(
                leaf.label,
                f"does not match checkpoint {checkpoint.number} (entry {position + 1} of "
                f"{checkpoint.count}): changed, or an entry before it was removed or inserted",
            )
            return
        self._hashes.append(leaf.hash)
        self._last = leaf
        report.covered += 1

    def finish(self) -> Report:
        """The report, once every entry was fed."""
        while self.report.ok and self._at < len(self._live):
            self._close(None)
        return self.report

    def _close(self, following: Leaf | None) -> bool:
        checkpoint = self._live[self._at]
        if len(self._hashes) < checkpoint.count:
            after = f"after {self._last.label}" if self._last else "at its start"
            where = following.label if following else "the end of the log"
            self._fail(
                where,
                f"is not what checkpoint {checkpoint.number} signed: its entry "
                f"{len(self._hashes) + 1} of {checkpoint.count} ({after}) was removed",
            )
            return False
        if merkle.root(self._hashes) != checkpoint.root:
            self._fail(
                f"checkpoint {checkpoint.number}",
                "the entries' Merkle root is not the signed one",
            )
            return False
        self._at += 1
        self._hashes = []
        return True

    def _fail(self, label: str, reason: str) -> None:
        self.report.bad_entry = label
        self.report.reason = reason


def audit(
    checkpoints: Iterable[Checkpoint], verifier: Verifier, log: str, leaves: Iterable[Leaf]
) -> Report:
    """Check `leaves` (in sequence order) against the trusted checkpoints of `log`."""
    run = LogAudit(trusted_branch(checkpoints, verifier, log))
    for leaf in leaves:
        run.feed(leaf)
    return run.finish()
