"""Keyrings: one secret as several keys, each with a key id; the first writes, all are accepted.

A secret that rotates (consent's ledger key, export's service key and link secret, the API
token) is read as a keyring. Its file (or variable) holds one key a line, `<kid>:<value>`, the
current key first:

    # lines starting with # are comments; blank lines are skipped
    20261206-a1b2:9f0c...          <- current: new writes (new pseudonyms, wraps, links, ...)
    legacy:3e77...                 <- still accepted for look-ups and verification

A kid is 1-32 characters of letters, digits, `.`, `_` and `-`, starting with a letter or digit.
A file with a single line and no `<kid>:` prefix is the old single-value format: that key's id
is `legacy` (the id migrated rows were given). Values are taken without surrounding whitespace.
An old single value that itself looks like `<kid>:<rest>` would be read as a keyed line: write
such a value as `legacy:<value>` (generated values, hex or base64, never contain `:`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr

LEGACY_KID = "legacy"
"""The id of a key given as a single value without a kid (written before keys had ids)."""
KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_LINE = re.compile(r"(?P<kid>[A-Za-z0-9][A-Za-z0-9._-]{0,31}):(?P<value>.*)", re.DOTALL)


class KeyringError(ValueError):
    """A keyring's text is malformed (the message never carries a key's value)."""


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a keyring: its id and its value (never shown by `repr`)."""

    kid: str
    value: str = field(repr=False)

    def encoded(self) -> bytes:
        """The value as UTF-8 bytes (what HMACs and comparisons use)."""
        return self.value.encode()


@dataclass(frozen=True, slots=True)
class Keyring:
    """Ordered keys with unique ids: `current` (the first) for new writes, all for reading."""

    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("a keyring needs at least one key")
        kids = [k.kid for k in self.keys]
        for kid in kids:
            if not KID.fullmatch(kid):
                raise KeyringError(f"bad key id {kid!r}: use 1-32 of A-Z a-z 0-9 . _ -")
        duplicate = next((k for k in kids if kids.count(k) > 1), None)
        if duplicate is not None:
            raise KeyringError(f"key id {duplicate!r} appears twice")

    @property
    def current(self) -> Key:
        """The key new writes use."""
        return self.keys[0]

    @property
    def kids(self) -> tuple[str, ...]:
        """Every key id, current first."""
        return tuple(k.kid for k in self.keys)

    def get(self, kid: str) -> Key | None:
        """The key with this id, if it is listed."""
        return next((k for k in self.keys if k.kid == kid), None)

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def rotated(self, key: Key) -> Keyring:
        """This keyring with `key` as the new current key (the others kept, still accepted)."""
        return Keyring((key, *self.keys))

    def without(self, kid: str) -> Keyring:
        """This keyring with one key retired (refused: the current key, an unknown id)."""
        if kid == self.current.kid:
            raise KeyringError(f"{kid!r} is the current key: rotate first, then retire it")
        if self.get(kid) is None:
            raise KeyringError(f"no key {kid!r} in the keyring")
        return Keyring(tuple(k for k in self.keys if k.kid != kid))

    def render(self) -> str:
        """The keyring in its file format (current first, one `kid:value` a line)."""
        return "".join(f"{k.kid}:{k.value}\n" for k in self.keys)


def parse_keyring(text: str) -> Keyring:
    """A keyring from its file format (or a single legacy value, kid `legacy`)."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise KeyringError("no key given")
    if len(lines) == 1 and not _LINE.fullmatch(lines[0]):
        return Keyring((Key(LEGACY_KID, lines[0]),))
    keys = []
    for number, line in enumerate(lines, 1):
        match = _LINE.fullmatch(line)
        if match is None:
            raise KeyringError(f"key {number} is not `<kid>:<value>`")
        value = match["value"].strip()
        if not value:
            raise KeyringError(f"key {match['kid']!r} has an empty value")
        keys.append(Key(match["kid"], value))
    return Keyring(tuple(keys))


def keyring(secret: SecretStr) -> Keyring:
    """The keyring a (validated) secret setting holds."""
    return parse_keyring(secret.get_secret_value())


def new_kid(now: datetime) -> str:
    """A fresh key id: the UTC date and four random hex digits (`20261206-a1b2`)."""
    return f"{now:%Y%m%d}-{secrets.token_hex(2)}"
