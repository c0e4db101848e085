"""The consent cache: latest version wins, tombstones erase, unknown means the default."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.catalogue import load_purposes
from shared.consent_client import (
    CONTRACT_PURPOSES,
    DEFAULT_ALLOWED,
    ConsentCache,
    Outcome,
    catalogue_defaults,
)
from shared.contract.events import ConsentStateData, PurposeState

SINCE = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def state(version: int, **allowed: bool) -> ConsentStateData:
    purposes = {
        purpose: PurposeState(
            state="granted" if ok else "withdrawn",
            allowed=ok,
            since=SINCE,
            basis="contract" if purpose in CONTRACT_PURPOSES else "consent",
        )
        for purpose, ok in allowed.items()
    }
    return ConsentStateData(version=version, purposes=purposes)


def test_unknown_subject_is_denied_consent_purposes_and_allowed_contract_ones() -> None:
    cache = ConsentCache()
    assert not cache.may_process("usr_1", "marketing_email")
    assert cache.may_process("usr_1", "transactional_email")


def test_grant_allows_and_later_withdrawal_denies_marketing() -> None:
    cache = ConsentCache()
    assert cache.apply("usr_1", state(1, marketing_email=True)) is Outcome.APPLIED
    assert cache.may_process("usr_1", "marketing_email")
    assert cache.apply("usr_1", state(2, marketing_email=False)) is Outcome.APPLIED
    assert not cache.may_process("usr_1", "marketing_email")


def test_an_older_or_equal_version_arriving_late_is_dropped() -> None:
    cache = ConsentCache()
    cache.apply("usr_1", state(3, marketing_email=False))
    assert cache.apply("usr_1", state(2, marketing_email=True)) is Outcome.STALE
    assert cache.apply("usr_1", state(3, marketing_email=True)) is Outcome.STALE
    assert not cache.may_process("usr_1", "marketing_email")
    assert cache.get("usr_1") is not None
    assert cache.get("usr_1").version == 3  # type: ignore[union-attr]


def test_the_state_decision_wins_over_the_default_even_for_contract_purposes() -> None:
    cache = ConsentCache()
    cache.apply("usr_1", state(1, transactional_email=False, analytics_cookies=True))
    assert not cache.may_process("usr_1", "transactional_email")
    assert cache.may_process("usr_1", "analytics_cookies")


def test_a_purpose_missing_from_the_state_falls_back_to_its_default() -> None:
    cache = ConsentCache()
    cache.apply("usr_1", state(1, marketing_email=True))
    assert not cache.may_process("usr_1", "personalisation")
    assert cache.may_process("usr_1", "transactional_email")


def test_tombstone_forgets_the_subject_and_a_replayed_old_state_does_not_return() -> None:
    cache = ConsentCache()
    cache.apply("usr_1", state(4, marketing_email=True))
    assert cache.erase("usr_1") is Outcome.ERASED
    assert "usr_1" not in cache
    assert not cache.may_process("usr_1", "marketing_email")
    assert cache.apply("usr_1", state(4, marketing_email=True)) is Outcome.STALE
    assert not cache.may_process("usr_1", "marketing_email")
    assert cache.apply("usr_1", state(5, marketing_email=True)) is Outcome.APPLIED
    assert cache.may_process("usr_1", "marketing_email")


def test_subjects_do_not_affect_each_other() -> None:
    cache = ConsentCache()
    cache.apply("usr_1", state(1, marketing_email=True))
    cache.apply("usr_2", state(7, marketing_email=False))
    cache.erase("usr_3")
    assert cache.may_process("usr_1", "marketing_email")
    assert not cache.may_process("usr_2", "marketing_email")
    assert len(cache) == 2


def test_defaults_are_a_constructor_argument() -> None:
    cache = ConsentCache(default_allowed={"transactional_email", "fraud_prevention"})
    assert cache.may_process("usr_9", "fraud_prevention")
    assert not ConsentCache(default_allowed=()).may_process("usr_9", "transactional_email")


def test_catalogue_defaults_allow_exactly_the_contract_purposes() -> None:
    # the default now also allows legitimate-interest purposes that default to allowed
    assert catalogue_defaults() == DEFAULT_ALLOWED
    necessary = {n for n, rule in load_purposes().purposes.items() if rule.necessary}
    assert necessary == CONTRACT_PURPOSES


@pytest.mark.parametrize("version", [1, 2, 10])
def test_state_without_purposes_denies_every_consent_purpose(version: int) -> None:
    cache = ConsentCache()
    cache.apply("usr_1", state(version))
    assert not cache.may_process("usr_1", "partner_marketing")


def test_client_package_imports_without_the_services_dependencies() -> None:
    """The `client` extra has no PyYAML, pydantic-settings, asyncpg, structlog or FastAPI."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('yaml', 'pydantic_settings', 'asyncpg', 'structlog', 'fastapi', 'uvicorn'):\n"
        "    sys.modules[m] = None\n"
        "import shared.consent_client as c\n"
        "assert not c.ConsentCache().may_process('usr_1', 'marketing_email')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_subjects_with_the_same_decisions_share_one_read_only_map() -> None:
    cache = ConsentCache()
    cache.apply("usr_1", state(1, marketing_email=True, analytics_cookies=False))
    cache.apply("usr_2", state(9, analytics_cookies=False, marketing_email=True))
    first, second = cache.get("usr_1"), cache.get("usr_2")
    assert first is not None
    assert second is not None
    assert first.allowed is second.allowed
    with pytest.raises(TypeError):
        first.allowed["marketing_email"] = False  # type: ignore[index]
