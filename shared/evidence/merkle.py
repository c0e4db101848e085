"""Merkle tree hashes as RFC 6962 / RFC 9162 define them (pure).

A leaf is H(0x00 || entry hash) and a node H(0x01 || left || right); the prefixes keep a
leaf from passing for a node. The tree over n leaves splits at the largest power of two
below n (RFC 9162 §2.1.1), so trees of every size, not only powers of two, are defined.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
"""The root of the empty tree: H() of nothing."""


def leaf_hash(entry_hash: str) -> bytes:
    """H(0x00 || entry): an entry's hex hash as a leaf."""
    return hashlib.sha256(b"\x00" + bytes.fromhex(entry_hash)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """H(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(entry_hashes: Sequence[str]) -> str:
    """The Merkle tree hash (hex) over these entries' hashes, in order."""
    if not entry_hashes:
        return EMPTY_ROOT
    return _mth([leaf_hash(h) for h in entry_hashes]).hex()


def _mth(leaves: Sequence[bytes]) -> bytes:
    # Bottom-up with the RFC's split: pairing left to right and carrying an odd last node up
    # unchanged builds the same tree as the recursive definition.
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def inclusion_proof(entry_hashes: Sequence[str], index: int) -> list[str]:
    """The audit path of leaf `index` (RFC 9162 §2.1.3.1), hex, leaf side first."""
    leaves = [leaf_hash(h) for h in entry_hashes]
    return [node.hex() for node in _path(index, leaves)]


def _path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)  # the largest power of two below n
    if index < k:
        return [*_path(index, leaves[:k]), _mth(leaves[k:])]
    return [*_path(index - k, leaves[k:]), _mth(leaves[:k])]


def verify_inclusion(
    entry_hash: str, index: int, size: int, proof: Sequence[str], top: str
) -> bool:
    """Whether `proof` shows the entry at `index` of a tree of `size` leaves under root `top`."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    node = leaf_hash(entry_hash)
    for step in (bytes.fromhex(p) for p in proof):
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(step, node)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = node_hash(node, step)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and node.hex() == top
