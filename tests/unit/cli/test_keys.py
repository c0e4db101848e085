"""`privacy-plane keys`: rotation writes a new current key and keeps the old ones; values are
never printed; a pseudonym key is not retired by accident."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from services.export.settings import ExportSettings
from shared.cli.commands import app
from shared.plumbing.keyring import parse_keyring

RUN = CliRunner()


def _secrets(tmp_path: Path) -> Path:
    (tmp_path / "consent_ledger_key").write_text("0123456789abcdef0123\n")  # old format
    (tmp_path / "export_service_key").write_text("A" * 43 + "=\n")
    return tmp_path


def test_rotate_puts_a_new_key_first_keeps_the_old_and_names_whom_to_restart(
    tmp_path: Path,
) -> None:
    folder = _secrets(tmp_path)
    result = RUN.invoke(app, ["keys", "rotate", "pseudonym", "--secrets-dir", str(folder)])
    assert result.exit_code == 0, result.output
    ring = parse_keyring((folder / "consent_ledger_key").read_text())
    assert ring.kids[1:] == ("legacy",)
    assert ring.get("legacy").value == "0123456789abcdef0123"  # type: ignore[union-attr]
    assert len(ring.current.value) == 64
    assert "restart: consent" in result.output
    assert ring.current.value not in result.output
    assert (folder / "consent_ledger_key").stat().st_mode & 0o777 == 0o644


def test_a_rotated_export_key_file_is_a_valid_service_key_setting(tmp_path: Path) -> None:
    folder = _secrets(tmp_path)
    assert (
        RUN.invoke(app, ["keys", "rotate", "export", "--secrets-dir", str(folder)]).exit_code == 0
    )
    text = (folder / "export_service_key").read_text()
    settings = ExportSettings(
        kafka_bootstrap_servers="k:9092",
        database_url="postgresql://x/y",  # type: ignore[arg-type]
        api_token="t" * 16,  # type: ignore[arg-type]
        link_secret="l" * 32,  # type: ignore[arg-type]
        service_key=text,  # type: ignore[arg-type]
    )
    assert [kid for kid, _ in settings.service_keys()][1:] == ["legacy"]


def test_list_shows_kids_and_the_current_one_but_no_value(tmp_path: Path) -> None:
    folder = _secrets(tmp_path)
    RUN.invoke(app, ["keys", "rotate", "link", "--secrets-dir", str(folder)])
    result = RUN.invoke(app, ["keys", "list", "--secrets-dir", str(folder)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "legacy" in lines["pseudonym"]
    assert "(current)" in lines["link"]
    assert "missing" in lines["api-token"]
    for name in ("consent_ledger_key", "export_link_secret", "export_service_key"):
        for key in parse_keyring((folder / name).read_text()):
            assert key.value not in result.output


def test_retiring_a_pseudonym_key_needs_the_explicit_flag(tmp_path: Path) -> None:
    folder = _secrets(tmp_path)
    RUN.invoke(app, ["keys", "rotate", "pseudonym", "--secrets-dir", str(folder)])
    args = ["keys", "retire", "pseudonym", "legacy", "--secrets-dir", str(folder)]
    refused = RUN.invoke(app, args)
    assert refused.exit_code == 2
    assert "legacy" in parse_keyring((folder / "consent_ledger_key").read_text()).kids
    assert RUN.invoke(app, [*args, "--unlink-erased"]).exit_code == 0
    assert "legacy" not in parse_keyring((folder / "consent_ledger_key").read_text()).kids


def test_the_current_key_cannot_be_retired(tmp_path: Path) -> None:
    folder = _secrets(tmp_path)
    result = RUN.invoke(app, ["keys", "retire", "export", "legacy", "--secrets-dir", str(folder)])
    assert result.exit_code == 2
    assert "current key" in result.output


def test_a_checkpoint_key_rotates_by_replacement_and_verifiers_keep_every_public_key(
    tmp_path: Path,
) -> None:
    """The old key signed checkpoints that must still verify: its public key is listed beside
    the new one; the private seed is replaced, never kept, and retiring is refused."""
    from shared.evidence.signing import Signer, Verifier, generate_seed

    key_file = tmp_path / "consent_checkpoint_key"
    key_file.write_text(generate_seed() + "\n")
    old = Signer.from_file(key_file)
    signed_before = old.sign(b"checkpoint 1")
    args = ["--secrets-dir", str(tmp_path)]

    result = RUN.invoke(app, ["keys", "rotate", "consent-checkpoint", *args])

    assert result.exit_code == 0, result.output
    new = Signer.from_file(key_file)
    assert new.key_id != old.key_id
    assert "restart: consent" in result.output
    assert key_file.read_text().strip() not in result.output  # the seed is never printed
    listed = (tmp_path / "consent_checkpoint_key.public").read_text().splitlines()
    assert listed == [f"{new.key_id} {new.public}", f"{old.key_id} {old.public}"]
    verifier = Verifier.of(line.split()[1] for line in listed)
    assert verifier.check(old.key_id, b"checkpoint 1", signed_before) is None
    assert verifier.check(new.key_id, b"checkpoint 2", new.sign(b"checkpoint 2")) is None
    only_new = Verifier.of([new.public])
    assert only_new.check(old.key_id, b"checkpoint 1", signed_before) is not None

    listing = RUN.invoke(app, ["keys", "list", *args])
    assert f"{new.key_id} (current), verify only: {old.key_id}" in listing.output
    retire = RUN.invoke(app, ["keys", "retire", "consent-checkpoint", old.key_id, *args])
    assert retire.exit_code == 2
    assert "refused" in retire.output


def test_a_checkpoint_key_that_is_unreadable_is_not_replaced(tmp_path: Path) -> None:
    key_file = tmp_path / "retention_checkpoint_key"
    key_file.write_text("not base64 at all!\n")
    result = RUN.invoke(
        app, ["keys", "rotate", "retention-checkpoint", "--secrets-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert key_file.read_text() == "not base64 at all!\n"
