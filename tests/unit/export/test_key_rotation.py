"""Rotating export's keys and the API token: the old key works while listed, the new one
writes, a retired one is refused."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.utils import random

from services.export import links
from services.export.parts import KeyVault, RetiredKey
from shared.plumbing.http import bearer, token_ok
from shared.plumbing.keyring import Key, Keyring, parse_keyring
from shared.plumbing.settings import ServiceSettings

OLD, NEW = bytes([1]) * 32, bytes([2]) * 32


def test_new_wraps_use_the_current_service_key_and_old_ones_still_open_while_listed() -> None:
    before = KeyVault(OLD)  # a single key: the format before key ids
    legacy = before.seal(b"private-1")
    old = KeyVault([("k1", OLD)]).seal(b"private-2")
    rotated = KeyVault([("k2", NEW), ("k1", OLD), ("legacy", OLD)])
    new = rotated.seal(b"private-3")
    assert rotated.current_kid == "k2"
    assert [rotated.open(s) for s in (legacy, old, new)] == [
        b"private-1",
        b"private-2",
        b"private-3",
    ]
    with pytest.raises(CryptoError):  # the new wrap is under the new key only
        KeyVault([("k2", OLD)]).open(new)
    retired = KeyVault([("k2", NEW)])
    with pytest.raises(RetiredKey, match="'k1'"):
        retired.open(old)
    with pytest.raises(CryptoError):
        retired.open(legacy)


def test_a_wrap_made_before_key_ids_opens_under_any_listed_key() -> None:
    box = bytes(SecretBox(OLD).encrypt(b"private", random(SecretBox.NONCE_SIZE)))  # no prefix
    assert KeyVault([("k2", NEW), ("legacy", OLD)]).open(box) == b"private"


def test_new_links_name_the_current_kid_and_old_links_verify_while_their_key_is_listed() -> None:
    ring = parse_keyring("k1:" + "a" * 32)
    old_link = links.download_path(ring, "req", "bun", 100)
    assert "kid=k1" in old_link
    old_sig = old_link.rsplit("sig=", 1)[1]
    legacy_sig = links.signature(b"l" * 32, "req", "bun", 100)  # a link from before kids
    rotated = ring.rotated(Key("k2", "b" * 32))
    new_link = links.download_path(rotated, "req", "bun", 100)
    assert "kid=k2" in new_link
    new_sig = new_link.rsplit("sig=", 1)[1]
    assert links.valid(rotated, "req", "bun", 100, old_sig, "k1")
    assert links.valid(rotated, "req", "bun", 100, new_sig, "k2")
    assert not links.valid(rotated, "req", "bun", 100, old_sig, "k2")  # the kid must match
    assert not links.valid(rotated, "req", "bun", 101, new_sig, "k2")
    listed = Keyring((*rotated.keys, Key("legacy", "l" * 32)))
    assert links.valid(listed, "req", "bun", 100, legacy_sig)  # no kid: any listed key
    retired = rotated.without("k1")
    assert not links.valid(retired, "req", "bun", 100, old_sig, "k1")
    assert not links.valid(retired, "req", "bun", 100, old_sig)


def test_several_api_tokens_are_valid_at_once_and_a_removed_one_is_refused() -> None:
    tokens = (b"new-token-0123456789", b"old-token-0123456789")
    assert token_ok(tokens, "Bearer new-token-0123456789")
    assert token_ok(tokens, "bearer old-token-0123456789")
    assert not token_ok(tokens, "Bearer other-token-012345678")
    assert not token_ok(tokens[:1], "Bearer old-token-0123456789")
    assert not token_ok(tokens, "Basic old-token-0123456789")


def _api(api_token: str) -> httpx.AsyncClient:
    settings = ServiceSettings(
        kafka_bootstrap_servers="k:9092",
        database_url="postgresql://x/y",
        api_token=api_token,  # type: ignore[arg-type]
        service_name="t",
        db_schema="t",
    )
    app = FastAPI()

    @app.get("/v1/x", dependencies=[bearer(settings)])
    async def x() -> dict[str, bool]:
        return {"ok": True}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def _status(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get("/v1/x", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def test_the_bearer_dependency_takes_every_listed_token() -> None:
    async with _api("t2:new-token-0123456789\nt1:old-token-0123456789") as rotated:
        assert await _status(rotated, "new-token-0123456789") == 200
        assert await _status(rotated, "old-token-0123456789") == 200
    async with _api("t2:new-token-0123456789") as retired:
        assert await _status(retired, "old-token-0123456789") == 401
        assert await _status(retired, "t2:new-token-0123456789") == 401  # the kid is a label
