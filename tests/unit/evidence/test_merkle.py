"""RFC 9162 Merkle tree hashes: roots and inclusion proofs."""

from __future__ import annotations

import hashlib

import pytest

from shared.evidence import merkle


def _hashes(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def _reference(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 as written: recursive, split at the largest power of two below n."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(_reference(leaves[:k]), _reference(leaves[k:]))


def test_the_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").hexdigest()


def test_a_leaf_and_a_node_are_domain_separated() -> None:
    h = _hashes(1)[0]
    assert merkle.leaf_hash(h) == hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest()
    assert merkle.root([h]) == merkle.leaf_hash(h).hex()
    left, right = merkle.leaf_hash(h), merkle.leaf_hash(h)
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 13, 31, 64, 100])
def test_root_matches_the_recursive_definition(n: int) -> None:
    hashes = _hashes(n)
    assert merkle.root(hashes) == _reference([merkle.leaf_hash(h) for h in hashes]).hex()


def test_changing_moving_or_dropping_a_leaf_changes_the_root() -> None:
    hashes = _hashes(6)
    top = merkle.root(hashes)
    assert merkle.root([*hashes[:2], _hashes(7)[6], *hashes[3:]]) != top
    assert merkle.root([hashes[1], hashes[0], *hashes[2:]]) != top
    assert merkle.root(hashes[:-1]) != top


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11])
def test_every_leaf_has_an_inclusion_proof(n: int) -> None:
    hashes = _hashes(n)
    top = merkle.root(hashes)
    for i, h in enumerate(hashes):
        proof = merkle.inclusion_proof(hashes, i)
        assert merkle.verify_inclusion(h, i, n, proof, top)
        assert not merkle.verify_inclusion(_hashes(n + 1)[n], i, n, proof, top)
