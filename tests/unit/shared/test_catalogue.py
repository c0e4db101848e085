"""The purpose catalogue and retention rules load, and bad files fail with clear errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.catalogue import ConfigError, Period, load_purposes, load_retention


def test_the_shipped_catalogue_has_the_design_purposes():
    catalogue = load_purposes()
    assert set(catalogue.purposes) == {
        "marketing_email", "analytics_cookies", "personalisation", "preference_cookies",
        "partner_marketing", "analytics_providers", "transactional_email",
        # policy 2.2 and the purposes the retention rules name (docs/policy-coverage.md)
        "platform_improvement", "contract_performance", "customer_support",
        "legal_obligation_tax",
    }  # fmt: skip
    assert sorted(catalogue.gpc_purposes()) == [
        "analytics_providers",
        "marketing_email",
        "partner_marketing",
    ]
    assert not catalogue.purposes["transactional_email"].withdrawable
    assert catalogue.purposes["transactional_email"].default is True


def test_the_shipped_retention_rules_match_the_design():
    rules = load_retention()
    assert str(rules.categories["billing_records"].period) == "P7Y"
    assert rules.categories["billing_records"].legal_obligation == "tax"
    assert rules.categories["crm_data"].period_from == "subscription"
    assert rules.categories["marketing_profile"].also_on_withdrawal == "marketing_email"
    assert rules.owners()["billing"] == ["billing_records"]


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("P90D", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
        ("P1M", datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        ("P7Y", datetime(2024, 2, 29, tzinfo=UTC), datetime(2031, 2, 28, tzinfo=UTC)),
        ("P0D", datetime(2026, 5, 5, tzinfo=UTC), datetime(2026, 5, 5, tzinfo=UTC)),
    ],
)
def test_periods_are_calendar_periods(text, start, end):
    assert Period.parse(text).after(start) == end


@pytest.mark.parametrize("text", ["", "P", "90D", "P-1D", "PT5H"])
def test_a_bad_period_is_refused_with_the_accepted_form(text):
    with pytest.raises(ValueError, match="PnYnMnD"):
        Period.parse(text)


def test_a_consent_purpose_that_defaults_to_allowed_is_refused(tmp_path):
    path = tmp_path / "purposes.yaml"
    path.write_text("purposes:\n  newsletter:\n    basis: consent\n    default: true\n")
    with pytest.raises(ConfigError, match=r"purposes.yaml: purposes.newsletter: .*Art. 7"):
        load_purposes(path)


def test_unknown_keys_and_missing_files_are_named(tmp_path):
    path = tmp_path / "retention.yaml"
    path.write_text("categories:\n  x:\n    owner: crm\n    period: P1D\n    perod: P2D\n")
    with pytest.raises(ConfigError, match=r"categories.x.perod"):
        load_retention(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_retention(tmp_path / "missing.yaml")


def test_a_catalogue_or_rule_set_larger_than_the_contract_lists_is_refused(tmp_path):
    """consent.state.v1 lists every purpose and request.status.v1 an outcome per category,
    each at most MAX_ITEMS long: a larger configuration is refused at start-up, not in flight."""
    purposes = tmp_path / "purposes.yaml"
    purposes.write_text(
        "purposes:\n" + "".join(f"  p{i}:\n    basis: consent\n" for i in range(201))
    )
    with pytest.raises(ConfigError, match=r"purposes: .*at most 200"):
        load_purposes(purposes)
    rules = tmp_path / "retention.yaml"
    rules.write_text(
        "categories:\n" + "".join(f"  c{i}:\n    owner: crm\n    period: P1D\n" for i in range(201))
    )
    with pytest.raises(ConfigError, match=r"categories: .*at most 200"):
        load_retention(rules)
