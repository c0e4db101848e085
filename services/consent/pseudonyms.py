"""Pseudonyms under a rotating key: which keyed hash names a person in the ledger and the
suppression list.

The ledger key is a keyring (shared/plumbing/keyring.py). A person's ledger is one hash chain
under one pseudonym: once started under a key it continues under that key (a chain is never
split, and no row is ever re-keyed), and a person without a ledger is named with the current
key. Suppression is checked under every listed key, and an erasure is recorded under every
listed key, so it still holds after the key it was first recorded under is retired.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from services.consent import ledger, store
from shared.plumbing.db import Conn


@dataclass(frozen=True, slots=True)
class Pseudonym:
    """A person's name under one key: the key's id and the keyed hash."""

    kid: str
    principal: str


def candidates(keys: Sequence[tuple[str, bytes]], subject: str) -> list[Pseudonym]:
    """The subject's pseudonym under each listed key, the current key's first."""
    return [Pseudonym(kid, ledger.pseudonym(key, subject)) for kid, key in keys]


def choose(names: Sequence[Pseudonym], chained: Collection[str]) -> Pseudonym:
    """The pseudonym new rows go under: the one the person's ledger already has (a chain
    continues under the key it started with), else the current key's."""
    for name in names:
        if name.principal in chained:
            return name
    return names[0]


@dataclass(frozen=True, slots=True)
class Resolved:
    """Who a subject is in the ledger: the pseudonym to use, and whether any key says erased."""

    pseudonym: Pseudonym
    erased: bool


async def resolve(
    conn: Conn, keys: Sequence[tuple[str, bytes]], subjects: Sequence[str]
) -> dict[str, Resolved]:
    """Each subject's pseudonym and erasure mark, with one query over every listed key."""
    names = {s: candidates(keys, s) for s in subjects}
    chained, erased = await store.pseudonym_marks(
        conn, [n.principal for ns in names.values() for n in ns]
    )
    return {
        s: Resolved(choose(ns, chained), any(n.principal in erased for n in ns))
        for s, ns in names.items()
    }


async def principal(conn: Conn, keys: Sequence[tuple[str, bytes]], subject: str) -> str:
    """The pseudonym a subject's ledger is kept under (for reading it)."""
    names = candidates(keys, subject)
    if len(names) == 1:
        return names[0].principal
    return (await resolve(conn, keys, [subject]))[subject].pseudonym.principal
