"""The register of processors and recipients (`config/recipients.yaml`), validated at start-up."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.catalogue import (
    CONFIG_DIR,
    ConfigError,
    PurposeCatalogue,
    RetentionRules,
    load_config,
    load_purposes,
    load_retention,
)

RECIPIENTS_FILE = CONFIG_DIR / "recipients.yaml"


class Role(StrEnum):
    """Why a recipient gets the data: it acts for us, decides for itself, or the law asks."""

    PROCESSOR = "processor"
    CONTROLLER = "controller"
    AUTHORITY = "authority"


class Recipient(BaseModel):
    """One recipient: who, in what role, for which purposes and categories, where, under what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    role: Role
    purposes: list[str] = Field(min_length=1)
    categories: list[str] = Field(min_length=1)
    country: str = Field(pattern=r"^[A-Z]{2}$")
    contract: str | None = None

    @model_validator(mode="after")
    def _a_processor_has_a_contract(self) -> Recipient:
        if self.role is Role.PROCESSOR and not self.contract:
            raise ValueError("a processor acts for us only under a contract (Art. 28(3))")
        return self


class RecipientRegister(BaseModel):
    """Every recipient by id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipients: dict[str, Recipient]

    def for_category(self, category: str) -> list[Recipient]:
        """The recipients that receive `category`, by name."""
        found = [r for r in self.recipients.values() if category in r.categories]
        return sorted(found, key=lambda r: r.name)


def load_recipients(
    path: Path = RECIPIENTS_FILE,
    purposes: PurposeCatalogue | None = None,
    rules: RetentionRules | None = None,
) -> RecipientRegister:
    """Load the register and check its purposes and categories against the catalogue and the
    retention rules (the shipped ones by default); raises ConfigError naming file and entry."""
    register: RecipientRegister = load_config(path, RecipientRegister)
    purposes = load_purposes() if purposes is None else purposes
    rules = load_retention(purposes=purposes) if rules is None else rules
    for key, recipient in register.recipients.items():
        for purpose in recipient.purposes:
            if purposes.get(purpose) is None:
                raise ConfigError(f"{path}: recipients.{key}.purposes: unknown purpose {purpose!r}")
        for category in recipient.categories:
            if category not in rules.categories:
                raise ConfigError(
                    f"{path}: recipients.{key}.categories: unknown category {category!r}"
                )
    return register
