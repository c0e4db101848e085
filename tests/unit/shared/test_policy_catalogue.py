"""Policy 2.2: the catalogue is complete, and a retention rule naming an unknown purpose fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.catalogue import (
    RETENTION_FILE,
    Basis,
    ConfigError,
    PurposeCatalogue,
    PurposeRule,
    load_purposes,
    load_retention,
)


def test_platform_improvement_is_a_legitimate_interest_allowed_by_default_and_gpc_free():
    rule = load_purposes().purposes["platform_improvement"]
    assert rule.basis is Basis.LEGITIMATE_INTEREST
    assert rule.default is True
    assert rule.gpc_applies is False
    assert rule.withdrawable
    assert rule.description


def test_every_purpose_a_retention_rule_names_is_described_with_its_basis():
    catalogue = load_purposes()
    for category, rule in load_retention().categories.items():
        for purpose in rule.purposes:
            known = catalogue.get(purpose)
            assert known is not None, (category, purpose)
            assert known.description, purpose
    bases = {p: catalogue.purposes[p].basis for p in ("contract_performance", "customer_support")}
    assert bases == {"contract_performance": Basis.CONTRACT, "customer_support": Basis.CONTRACT}
    tax = catalogue.purposes["legal_obligation_tax"]
    assert tax.basis is Basis.LEGAL_OBLIGATION
    assert tax.necessary
    assert not tax.withdrawable
    assert tax.default


def test_a_legal_obligation_purpose_must_default_to_allowed():
    with pytest.raises(ValueError, match="legal_obligation purpose is always allowed"):
        PurposeRule(basis=Basis.LEGAL_OBLIGATION, default=False)


def test_a_retention_rule_naming_an_unknown_purpose_is_refused_naming_file_category_purpose(
    tmp_path: Path,
) -> None:
    path = tmp_path / "retention.yaml"
    path.write_text(RETENTION_FILE.read_text().replace("[customer_support]", "[support_ai]"))
    with pytest.raises(
        ConfigError,
        match=r"retention.yaml: categories.support_communications.purposes: "
        r"unknown purpose 'support_ai'",
    ):
        load_retention(path)


def test_the_check_uses_the_catalogue_it_is_given(tmp_path: Path) -> None:
    small = PurposeCatalogue(purposes={"transactional_email": load_purposes().purposes[
        "transactional_email"
    ]})  # fmt: skip
    with pytest.raises(ConfigError, match="unknown purpose 'contract_performance'"):
        load_retention(RETENTION_FILE, small)
