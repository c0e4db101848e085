"""Keyrings: the file format of a rotating secret, and the secret settings that hold one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from services.consent.settings import ConsentSettings
from services.export.settings import ExportSettings
from shared.plumbing.keyring import (
    LEGACY_KID,
    Key,
    Keyring,
    KeyringError,
    keyring,
    new_kid,
    parse_keyring,
)

BASE: dict[str, Any] = {"kafka_bootstrap_servers": "k:9092", "database_url": "postgresql://x/y"}


def test_a_single_value_without_a_kid_is_the_legacy_key() -> None:
    ring = parse_keyring("0123456789abcdef0123\n")
    assert ring.kids == (LEGACY_KID,)
    assert ring.current.value == "0123456789abcdef0123"


def test_lines_are_kid_value_pairs_the_first_is_current_and_comments_are_skipped() -> None:
    ring = parse_keyring("# rotated 2026-12-06\n\nk2:new-value:with-colon\n  legacy:old-value  \n")
    assert ring.kids == ("k2", LEGACY_KID)
    assert ring.current == Key("k2", "new-value:with-colon")
    assert ring.get(LEGACY_KID) == Key(LEGACY_KID, "old-value")
    assert ring.get("k9") is None
    assert parse_keyring(ring.render()) == ring


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key given"),
        ("# only a comment\n", "no key given"),
        ("k1:aaa\nno-kid-here\n", "key 2 is not `<kid>:<value>`"),
        ("k1:aaa\nk1:bbb\n", "appears twice"),
        ("k1:\nk2:bbb\n", "empty value"),
        ("k1:aaa\n-bad:bbb\n", "key 2 is not"),
    ],
)
def test_malformed_keyrings_are_refused_without_their_values(text: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as refused:
        parse_keyring(text)
    assert "aaa" not in str(refused.value)
    assert "bbb" not in str(refused.value)


def test_a_rotation_puts_the_new_key_first_and_retiring_keeps_the_current() -> None:
    ring = parse_keyring("old-value-0123456789")
    rotated = ring.rotated(Key("k2", "new"))
    assert rotated.kids == ("k2", LEGACY_KID)
    assert rotated.without(LEGACY_KID).kids == ("k2",)
    with pytest.raises(KeyringError, match="current key"):
        rotated.without("k2")
    with pytest.raises(KeyringError, match="no key"):
        rotated.without("k7")


def test_a_key_value_never_shows_in_its_repr() -> None:
    assert "secret-value" not in repr(Keyring((Key("k1", "secret-value"),)))


def test_a_new_kid_is_dated_and_valid() -> None:
    kid = new_kid(datetime(2026, 12, 6, tzinfo=UTC))
    assert kid.startswith("20261206-")
    assert len(kid) == 13
    assert parse_keyring(f"{kid}:v").kids == (kid,)


def test_every_key_of_a_secret_setting_meets_the_length_rule() -> None:
    ok = ConsentSettings(
        **BASE, api_token="t" * 16, ledger_key="k2:" + "n" * 16 + "\nk1:" + "o" * 16
    )  # type: ignore[arg-type]
    assert keyring(ok.ledger_key).kids == ("k2", "k1")
    with pytest.raises(ValidationError, match="ledger_key key 'k1' must be at least 16"):
        ConsentSettings(**BASE, api_token="t" * 16, ledger_key="k2:" + "n" * 16 + "\nk1:short")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="api_token: key 2 is not"):
        ConsentSettings(**BASE, api_token="a:" + "t" * 16 + "\nbare", ledger_key="k" * 16)  # type: ignore[arg-type]


def test_each_export_service_key_must_be_base64_of_32_bytes() -> None:
    good, other = "A" * 43 + "=", "B" * 43 + "="
    settings = ExportSettings(
        **BASE,
        api_token="t" * 16,
        link_secret="l" * 32,
        service_key=f"k2:{good}\nk1:{other}",  # type: ignore[arg-type]
    )
    assert [kid for kid, _ in settings.service_keys()] == ["k2", "k1"]
    assert settings.service_key_bytes() == settings.service_keys()[0][1]
    with pytest.raises(ValidationError, match="service_key 'k1' must be 32 bytes"):
        ExportSettings(
            **BASE,
            api_token="t" * 16,
            link_secret="l" * 32,
            service_key=f"k2:{good}\nk1:QUJD",  # type: ignore[arg-type]
        )
    assert keyring(SecretStr(good)).kids == (LEGACY_KID,)
