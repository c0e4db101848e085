"""What GDPR Art. 15(1) asks an export to tell beside the data: purposes and their legal basis,
recipients (from the register), retention and source, per category (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from shared.catalogue import PurposeCatalogue, RetentionRules
from shared.recipients import RecipientRegister


class PurposeInfo(BaseModel):
    """One purpose a category serves: what it is, on what legal basis (Art. 15(1)(a), 13(1)(c))."""

    model_config = ConfigDict(frozen=True)

    purpose: str
    description: str
    basis: str


class RecipientInfo(BaseModel):
    """One recipient of a category, from the register (Art. 15(1)(c)), never an internal name."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: str
    country: str
    purposes: list[str]


class CategoryInfo(BaseModel):
    """What GDPR Art. 15(1) asks us to tell beside the data of one category."""

    model_config = ConfigDict(frozen=True)

    owner: str
    purposes: list[PurposeInfo]
    recipients: list[RecipientInfo]
    retention: str
    retention_period: str | None
    source: str


CONSENT_RECORDS_INFO = {
    "purposes": ["proof_of_consent"],
    "retention": "kept while the account exists, to prove consent (GDPR Art. 7(1)); "
    "its personal fields are deleted on erasure",
    "source": "your consent choices, recorded when you made them",
}
PROOF_OF_CONSENT = PurposeInfo(
    purpose="proof_of_consent",
    description="Proving that and how you gave or withdrew consent (GDPR Art. 7(1)).",
    basis="legal_obligation",
)


def retention_text(rules: RetentionRules, category: str) -> str:
    """The retention rule of `category` in words."""
    rule = rules.categories.get(category)
    if rule is None:
        return str(CONSENT_RECORDS_INFO["retention"])
    if rule.period_from == "subscription":
        text = f"per subscription terms (default {rule.period}) after account closure"
    else:
        text = f"{rule.period} after account closure"
    if rule.also_on_withdrawal:
        text += f", or at once when consent to {rule.also_on_withdrawal} is withdrawn"
    if rule.legal_obligation:
        text += f"; kept for a legal obligation ({rule.legal_obligation})"
    return text


def information(
    owners: Mapping[str, Sequence[str]],
    rules: RetentionRules,
    purposes: PurposeCatalogue,
    register: RecipientRegister,
) -> dict[str, CategoryInfo]:
    """Art. 15 information per category: purposes with their basis, the register's recipients,
    the retention rule and the source."""
    result: dict[str, CategoryInfo] = {}
    for owner, categories in sorted(owners.items()):
        for category in categories:
            rule = rules.categories.get(category)
            described = [PROOF_OF_CONSENT]
            if rule is not None:
                described = [_purpose_info(name, purposes) for name in rule.purposes]
            served = {p.purpose for p in described}
            result[category] = CategoryInfo(
                owner=owner,
                purposes=described,
                recipients=[
                    RecipientInfo(
                        name=r.name,
                        role=r.role.value,
                        country=r.country,
                        purposes=[p for p in r.purposes if p in served] or list(r.purposes),
                    )
                    for r in register.for_category(category)
                ],
                retention=retention_text(rules, category),
                retention_period=str(rule.period) if rule else None,
                source=rule.source if rule and rule.source else str(CONSENT_RECORDS_INFO["source"]),
            )
    return result


def _purpose_info(name: str, purposes: PurposeCatalogue) -> PurposeInfo:
    known = purposes.get(name)
    if known is None:  # load_retention refuses this at start-up; never an empty description
        raise ValueError(f"retention rules name purpose {name!r} the catalogue does not know")
    return PurposeInfo(purpose=name, description=known.description, basis=known.basis.value)
