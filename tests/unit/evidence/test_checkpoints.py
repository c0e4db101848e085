"""Signed checkpoints and the audit of a log against them (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.evidence.audit import audit, trusted_branch
from shared.evidence.checkpoint import Checkpoint, Fork, Leaf, Previous, make_checkpoint
from shared.evidence.signing import KeyFileError, Signer, Verifier, generate_seed

AT = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
LOG = "test.log"


def _signer(n: int = 1) -> Signer:
    return Signer.from_seed(bytes([n]) * 32)


def _leaves(first: int, last: int, tag: str = "") -> list[Leaf]:
    import hashlib

    return [
        Leaf(i, hashlib.sha256(f"{tag}{i}".encode()).hexdigest(), f"entry {i}")
        for i in range(first, last + 1)
    ]


def _chain(signer: Signer, *ranges: list[Leaf]) -> list[Checkpoint]:
    out: list[Checkpoint] = []
    previous = Previous()
    for leaves in ranges:
        cp = make_checkpoint(signer, LOG, previous, leaves, AT)
        out.append(cp)
        previous = Previous(cp.number, cp.hash, cp.upto_seq)
    return out


def test_untouched_entries_verify_and_newer_ones_are_counted_as_unprotected() -> None:
    signer = _signer()
    leaves = _leaves(1, 10)
    checkpoints = _chain(signer, leaves[:4], leaves[4:8])
    report = audit(checkpoints, Verifier.of([signer.public]), LOG, leaves)
    assert report.ok, report.reason
    assert (report.checked, report.covered, report.uncovered) == (10, 8, 2)


def test_a_consistently_rewritten_entry_is_named() -> None:
    signer = _signer()
    leaves = _leaves(1, 8)
    checkpoints = _chain(signer, leaves[:4], leaves[4:])
    rewritten = [*leaves[:5], *_leaves(6, 8, tag="forged")]
    report = audit(checkpoints, Verifier.of([signer.public]), LOG, rewritten)
    assert not report.ok
    assert report.bad_entry == "entry 6"


def test_a_removed_entry_is_named_by_the_one_after_it() -> None:
    signer = _signer()
    leaves = _leaves(1, 8)
    checkpoints = _chain(signer, leaves[:4], leaves[4:])
    report = audit(checkpoints, Verifier.of([signer.public]), LOG, leaves[:2] + leaves[3:])
    assert report.bad_entry == "entry 4"
    tail = audit(checkpoints, Verifier.of([signer.public]), LOG, leaves[:-1])
    assert not tail.ok
    assert "removed" in (tail.reason or "")


def test_an_entry_slipped_into_a_signed_range_is_named() -> None:
    signer = _signer()
    leaves = _leaves(1, 4)
    checkpoints = _chain(signer, [leaves[0], leaves[2], leaves[3]])
    report = audit(checkpoints, Verifier.of([signer.public]), LOG, leaves)
    assert report.bad_entry == "entry 2"


def test_an_entry_s_own_chain_problem_is_reported_first() -> None:
    signer = _signer()
    leaves = _leaves(1, 3)
    checkpoints = _chain(signer, leaves)
    broken = [leaves[0], replace(leaves[1], problem="does not link"), leaves[2]]
    report = audit(checkpoints, Verifier.of([signer.public]), LOG, broken)
    assert (report.bad_entry, report.reason) == ("entry 2", "does not link")


def test_checkpoints_by_another_key_or_altered_are_not_trusted() -> None:
    signer, forger = _signer(1), _signer(2)
    leaves = _leaves(1, 4)
    forged = _chain(forger, leaves)
    branch = trusted_branch(forged, Verifier.of([signer.public]), LOG)
    assert branch.live == []
    assert "unknown key" in branch.rejected[0]
    altered = replace(_chain(signer, leaves)[0], root="0" * 64)
    assert "hash" in trusted_branch([altered], Verifier.of([signer.public]), LOG).rejected[0]


def test_a_rotated_key_still_verifies_older_checkpoints() -> None:
    old, new = _signer(1), _signer(2)
    leaves = _leaves(1, 6)
    first = make_checkpoint(old, LOG, Previous(), leaves[:3], AT)
    second = make_checkpoint(
        new, LOG, Previous(first.number, first.hash, first.upto_seq), leaves[3:], AT
    )
    assert first.key_id != second.key_id
    both = Verifier.of([old.public, new.public])
    assert audit([first, second], both, LOG, leaves).ok
    assert not audit([first, second], Verifier.of([new.public]), LOG, leaves).ok


def test_a_restore_is_a_signed_fork_and_the_abandoned_branch_is_superseded() -> None:
    signer = _signer()
    before = _leaves(1, 4)
    lost = _leaves(5, 6)
    first, abandoned = _chain(signer, before, lost)
    rederived = _leaves(5, 7, tag="replayed")
    fork = make_checkpoint(
        signer,
        LOG,
        Previous(first.number, first.hash, first.upto_seq),
        rederived,
        AT,
        Fork("2026-12-06T09:00:00+00:00", "2026-12-06T07:00:00+00:00"),
    )
    report = audit([first, abandoned, fork], Verifier.of([signer.public]), LOG, before + rederived)
    assert report.ok, report.reason
    assert report.forks == [fork]
    assert report.superseded == [abandoned]


def test_checkpoint_records_round_trip() -> None:
    signer = _signer()
    fork = Fork("a", "b")
    cp = make_checkpoint(signer, LOG, Previous(), _leaves(1, 2), AT, fork)
    assert Checkpoint.from_record(cp.record()) == cp


def test_key_files_hold_a_base64_seed(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "key"
    path.write_text(generate_seed() + "\n")
    signer = Signer.from_file(path)
    assert len(signer.key_id) == 16
    path.write_text("not a key")
    with pytest.raises(KeyFileError):
        Signer.from_file(path)
