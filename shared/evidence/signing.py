"""Ed25519 checkpoint keys (PyNaCl): a signing key from a file, verifiers from public keys.

The signing key file holds the base64 of a 32-byte seed and lives outside the database. A
key's id is the first 16 hex digits of the SHA-256 of its public key; each checkpoint names
the id it was signed with, so after a rotation (a new key file, the old public key kept among
the verifier's keys) older checkpoints still verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey


class KeyFileError(ValueError):
    """A key file or public key that cannot be read."""


def key_id(public: bytes) -> str:
    """The id of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"{what} must be 32 bytes (base64), not {len(raw)}")
    return raw


@dataclass(frozen=True)
class Signer:
    """The checkpoint signing key and its id."""

    key: SigningKey

    @property
    def public(self) -> str:
        """The public key, base64 (what verifiers are given)."""
        return base64.b64encode(bytes(self.key.verify_key)).decode()

    @property
    def key_id(self) -> str:
        """The id recorded in every checkpoint this key signs."""
        return key_id(bytes(self.key.verify_key))

    def sign(self, message: bytes) -> str:
        """The detached signature of `message`, base64."""
        return base64.b64encode(self.key.sign(message).signature).decode()

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        """A signer from its 32-byte seed."""
        return cls(SigningKey(seed))

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """The signer whose seed (base64) is in `path`."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise KeyFileError(f"checkpoint key file {path}: {exc.strerror}") from None
        return cls.from_seed(_b64(text, f"checkpoint key file {path}"))


def generate_seed() -> str:
    """A new signing key's seed, base64 (the content of a key file)."""
    return base64.b64encode(bytes(SigningKey.generate())).decode()


@dataclass(frozen=True)
class Verifier:
    """The public keys checkpoints may be signed with, by key id."""

    keys: Mapping[str, VerifyKey]

    @classmethod
    def of(cls, public_keys: Iterable[str]) -> Verifier:
        """A verifier trusting these base64 public keys (e.g. the current and a rotated one)."""
        keys = {}
        for text in public_keys:
            raw = _b64(text, "public key")
            keys[key_id(raw)] = VerifyKey(raw)
        return cls(keys)

    def check(self, kid: str, message: bytes, signature: str) -> str | None:
        """None if `signature` over `message` is good under key `kid`; else what is wrong."""
        key = self.keys.get(kid)
        if key is None:
            return f"signed with unknown key {kid}"
        try:
            key.verify(message, base64.b64decode(signature))
        except (BadSignatureError, binascii.Error, ValueError):
            return f"bad signature (key {kid})"
        return None
