"""`keys list|rotate|retire`: the rotating secrets' key files (keyrings), never their values.

Each kind is one secret file under the secrets folder (`--secrets-dir`, `PP_SECRETS_DIR`,
default `deploy/secrets`, as deploy/make-secrets writes it) or the file `--file` names. A
rotation puts a new key with a new kid first (the current one) and keeps the others; services
read their secrets at start-up, so the ones printed must be restarted. A checkpoint signing key
(Ed25519) is one key per file: a rotation replaces it, and the public keys it ever held are
listed in `<file>.public` for the verifiers. See docs/runbooks/key-rotation.md.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import typer

from shared.cli.common import err, out
from shared.evidence.signing import KeyFileError, Signer, generate_seed
from shared.plumbing.keyring import Key, Keyring, KeyringError, new_kid, parse_keyring

app = typer.Typer(help="Key files of the rotating secrets: list, rotate, retire.")


class Kind(StrEnum):
    """The secrets that rotate."""

    pseudonym = "pseudonym"
    export = "export"
    link = "link"
    api_token = "api-token"  # noqa: S105 - a kind's name, not a token
    consent_checkpoint = "consent-checkpoint"
    retention_checkpoint = "retention-checkpoint"


@dataclass(frozen=True)
class KindInfo:
    """Where a kind's keys live, how a new one is made and who reads it."""

    file: str
    setting: str
    restart: str
    base64_key: bool = False
    signing: bool = False
    """An Ed25519 checkpoint key: one per file, replaced (not listed) by a rotation."""


KINDS = {
    Kind.pseudonym: KindInfo("consent_ledger_key", "CONSENT_LEDGER_KEY", "consent"),
    Kind.export: KindInfo("export_service_key", "EXPORT_SERVICE_KEY", "export", base64_key=True),
    Kind.link: KindInfo("export_link_secret", "EXPORT_LINK_SECRET", "export"),
    Kind.api_token: KindInfo(
        "api_token",
        "<PREFIX>_API_TOKEN",
        "consent, retention and export (then give clients the new token: PP_API_TOKEN accepts "
        "the whole file and sends its current token)",
    ),
    Kind.consent_checkpoint: KindInfo(
        "consent_checkpoint_key", "CONSENT_CHECKPOINT_KEY_FILE", "consent", signing=True
    ),
    Kind.retention_checkpoint: KindInfo(
        "retention_checkpoint_key", "RETENTION_CHECKPOINT_KEY_FILE", "retention", signing=True
    ),
}

SECRETS_DIR = typer.Option(
    Path("deploy/secrets"), "--secrets-dir", envvar="PP_SECRETS_DIR", help="The secrets folder."
)
FILE = typer.Option(None, "--file", help="The key file itself (instead of the folder's).")


def new_value(kind: Kind) -> str:
    """A fresh key of `kind`: hex of 32 random bytes, base64 for the export service key."""
    raw = secrets.token_bytes(32)
    return base64.b64encode(raw).decode() if KINDS[kind].base64_key else raw.hex()


def rotate_text(kind: Kind, text: str | None, now: datetime) -> Keyring:
    """The keyring after a rotation: a new current key before the ones `text` holds."""
    fresh = Key(new_kid(now), new_value(kind))
    return Keyring((fresh,)) if text is None else parse_keyring(text).rotated(fresh)


def _path(kind: Kind, secrets_dir: Path, file: Path | None) -> Path:
    return file if file is not None else secrets_dir / KINDS[kind].file


def _write(path: Path, ring: Keyring | str) -> None:
    """Replace the file at once (a reader never sees half a keyring), keeping its mode."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # as make-secrets writes
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(ring if isinstance(ring, str) else ring.render(), encoding="utf-8")
    temporary.chmod(mode)
    os.replace(temporary, path)


def public_keys_file(path: Path) -> Path:
    """Where a checkpoint key file's public keys (current first, then retired) are listed."""
    return path.with_name(f"{path.name}.public")


def rotate_signing_key(path: Path) -> tuple[Signer, list[str]]:
    """Replace the Ed25519 key at `path` by a new one; returns it and the public-keys lines
    (`<kid> <public key>`, the new key first) written beside it for the verifiers."""
    listed = public_keys_file(path)
    lines = listed.read_text(encoding="utf-8").split("\n") if listed.exists() else []
    lines = [line for line in lines if line.strip()]
    if path.exists():
        old = Signer.from_file(path)  # refuses an unreadable key before anything is replaced
        if f"{old.key_id} {old.public}" not in lines:
            lines.insert(0, f"{old.key_id} {old.public}")
    _write(path, generate_seed() + "\n")
    new = Signer.from_file(path)
    lines.insert(0, f"{new.key_id} {new.public}")
    _write(listed, "\n".join(lines) + "\n")
    return new, lines


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


@app.command("list")
def list_keys(secrets_dir: Path = SECRETS_DIR) -> None:
    """Each kind's key ids, the current one marked (values are never shown)."""
    for kind, info in KINDS.items():
        path = secrets_dir / info.file
        text = _read(path)
        if text is not None and info.signing:
            _list_signing(kind, path)
            continue
        if text is None:
            out.print(f"{kind.value:10} {path}: [yellow]missing[/yellow]", soft_wrap=True)
            continue
        try:
            ring = parse_keyring(text)
        except KeyringError as exc:
            out.print(f"{kind.value:10} {path}: [red]unreadable[/red] ({exc})", soft_wrap=True)
            continue
        kids = ", ".join(f"{k} (current)" if i == 0 else k for i, k in enumerate(ring.kids))
        out.print(f"{kind.value:10} {path}: {kids}", soft_wrap=True)


def _list_signing(kind: Kind, path: Path) -> None:
    try:
        kid = Signer.from_file(path).key_id
    except KeyFileError as exc:
        out.print(f"{kind.value:10} {path}: [red]unreadable[/red] ({exc})", soft_wrap=True)
        return
    listed = public_keys_file(path)
    older = [
        line.split()[0]
        for line in (listed.read_text(encoding="utf-8").splitlines() if listed.exists() else [])
        if line.strip() and line.split()[0] != kid
    ]
    verify_only = f", verify only: {', '.join(older)}" if older else ""
    out.print(f"{kind.value:10} {path}: {kid} (current){verify_only}", soft_wrap=True)


@app.command("rotate")
def rotate(kind: Kind, secrets_dir: Path = SECRETS_DIR, file: Path | None = FILE) -> None:
    """Write a new key with a new kid as the current one, keeping the old ones; says whom to
    restart."""
    path = _path(kind, secrets_dir, file)
    if KINDS[kind].signing:
        _rotate_signing(kind, path)
        return
    try:
        ring = rotate_text(kind, _read(path), datetime.now(UTC))
    except KeyringError as exc:
        err.print(f"[red]error:[/red] {path}: {exc}")
        raise typer.Exit(2) from None
    _write(path, ring)
    accepted = ", ".join(ring.kids[1:]) or "none"
    out.print(
        f"{path}: new current key {ring.current.kid}; still accepted: {accepted}", soft_wrap=True
    )
    out.print(f"restart: {KINDS[kind].restart}", soft_wrap=True)


def _rotate_signing(kind: Kind, path: Path) -> None:
    try:
        new, lines = rotate_signing_key(path)
    except (KeyFileError, OSError) as exc:
        err.print(f"[red]error:[/red] {path}: {exc}")
        raise typer.Exit(2) from None
    publics = ",".join(line.split()[1] for line in lines)
    out.print(f"{path}: new signing key {new.key_id} (public key {new.public})", soft_wrap=True)
    out.print(
        f"public keys, new first: {public_keys_file(path)}; verifiers keep them all, as "
        f"checkpoints name the key that signed them: PP_CHECKPOINT_PUBLIC_KEYS={publics} "
        f"(and the service's {KINDS[kind].restart.upper()}_CHECKPOINT_PUBLIC_KEYS, a JSON list)",
        soft_wrap=True,
    )
    out.print(f"restart: {KINDS[kind].restart}", soft_wrap=True)


@app.command("retire")
def retire(
    kind: Kind,
    kid: str,
    secrets_dir: Path = SECRETS_DIR,
    file: Path | None = FILE,
    unlink_erased: bool = typer.Option(
        False,
        "--unlink-erased",
        help="Needed to retire a pseudonym key: ledgers and erasures under it stop matching.",
    ),
) -> None:
    """Remove a key that is no longer current (what it signed or wrapped stops verifying)."""
    if kind is Kind.pseudonym and not unlink_erased:
        err.print(
            "[red]refused:[/red] retiring a pseudonym key unlinks every ledger written under it "
            "and every erasure recorded only under it (their late events would come back). "
            "Read docs/runbooks/key-rotation.md; pass --unlink-erased if that is intended."
        )
        raise typer.Exit(2)
    if KINDS[kind].signing:
        err.print(
            "[red]refused:[/red] a checkpoint key is one key per file and `keys rotate` replaces "
            "it; its public key stays with the verifiers (the .public file) for as long as the "
            "checkpoints it signed must verify."
        )
        raise typer.Exit(2)
    path = _path(kind, secrets_dir, file)
    text = _read(path)
    try:
        if text is None:
            raise KeyringError("no such file")
        ring = parse_keyring(text).without(kid)
    except KeyringError as exc:
        err.print(f"[red]error:[/red] {path}: {exc}")
        raise typer.Exit(2) from None
    _write(path, ring)
    out.print(f"{path}: retired {kid}; keys now {', '.join(ring.kids)}", soft_wrap=True)
    out.print(f"restart: {KINDS[kind].restart}", soft_wrap=True)
