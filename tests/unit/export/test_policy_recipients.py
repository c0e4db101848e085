"""Policy 3 / 3.1: the register of recipients, and the access file naming them, not services."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.export import domain
from services.export.settings import default_owners
from shared.catalogue import ConfigError, load_purposes, load_retention
from shared.recipients import RECIPIENTS_FILE, Role, load_recipients


def info() -> dict[str, domain.CategoryInfo]:
    return domain.information(
        default_owners(), load_retention(), load_purposes(), load_recipients()
    )


def test_the_access_file_lists_register_recipients_never_internal_service_names():
    owners = default_owners()
    for category, found in info().items():
        names = {r.name for r in found.recipients}
        assert not names & set(owners), category
    marketing = info()["marketing_profile"].recipients
    processor = next(r for r in marketing if r.purposes == ["partner_marketing"])
    assert (processor.name, processor.role) == ("Marketing campaign processor", "processor")


def test_every_purpose_has_its_description_and_legal_basis():
    for category, found in info().items():
        for purpose in found.purposes:
            assert purpose.description, (category, purpose.purpose)
            assert purpose.basis in {
                "consent",
                "contract",
                "legitimate_interest",
                "legal_obligation",
            }
    billing = {p.purpose: p.basis for p in info()["billing_records"].purposes}
    assert billing["legal_obligation_tax"] == "legal_obligation"
    assert info()["billing_records"].retention_period == "P7Y"
    usage = {p.purpose: p.basis for p in info()["usage_data"].purposes}
    assert usage["platform_improvement"] == "legitimate_interest"


def test_partner_marketing_says_it_is_processing_on_our_behalf():
    description = load_purposes().purposes["partner_marketing"].description
    assert "for us" in description
    assert "not sold" in description
    register = load_recipients()
    holders = [r for r in register.recipients.values() if "partner_marketing" in r.purposes]
    assert holders
    assert all(r.role is Role.PROCESSOR and r.contract for r in holders)


def test_marketing_and_analytics_recipients_are_all_processors():
    for recipient in load_recipients().recipients.values():
        marketing = {"partner_marketing", "marketing_email", "analytics_providers"}
        if marketing & set(recipient.purposes):
            assert recipient.role is Role.PROCESSOR, recipient.name


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "purposes: [partner_marketing]",
            "purposes: [resale]",
            r"recipients.yaml: recipients.marketing_processor.purposes: unknown purpose 'resale'",
        ),
        (
            "categories: [support_communications]",
            "categories: [health_data]",
            r"recipients.support_desk.categories: unknown category 'health_data'",
        ),
        (
            "    contract: DPA-2026-005\n",
            "",
            r"recipients.support_desk: .*Art. 28",
        ),
    ],
)
def test_a_bad_register_entry_is_refused_naming_file_and_entry(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = tmp_path / "recipients.yaml"
    text = RECIPIENTS_FILE.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_recipients(path)
