"""The purpose catalogue and the retention rules: configuration files, validated at start-up."""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.contract.events import MAX_ITEMS

CONFIG_DIR = Path(__file__).parent / "config"
PURPOSES_FILE = CONFIG_DIR / "purposes.yaml"
RETENTION_FILE = CONFIG_DIR / "retention.yaml"

_PERIOD = re.compile(r"^P(?:(?P<y>\d+)Y)?(?:(?P<m>\d+)M)?(?:(?P<d>\d+)D)?$")


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message names the file and field."""


class Basis(StrEnum):
    CONSENT = "consent"
    CONTRACT = "contract"
    LEGITIMATE_INTEREST = "legitimate_interest"
    LEGAL_OBLIGATION = "legal_obligation"


class Continues(StrEnum):
    """What may go on while processing is restricted (GDPR Art. 18(2))."""

    STORAGE = "storage"
    LEGAL_CLAIMS = "legal_claims"
    OTHERS_RIGHTS = "others_rights"
    PUBLIC_INTEREST = "public_interest"


NECESSARY = frozenset({Basis.CONTRACT, Basis.LEGAL_OBLIGATION})
"""Bases that need no consent: allowed, never withdrawn (GDPR Art. 6(1)(b), (c)); a
restriction (Art. 18) still stops them unless they continue under Art. 18(2)."""


class Period(BaseModel):
    """A calendar period (ISO 8601 `PnYnMnD`): years and months are calendar ones."""

    model_config = ConfigDict(frozen=True)

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse `P90D`, `P2Y`, `P1Y6M`; raises ValueError with the accepted form."""
        match = _PERIOD.match(text.strip()) if text else None
        if not match or text.strip() == "P":
            raise ValueError(f"period {text!r} is not of the form PnYnMnD (e.g. P90D, P7Y)")
        return cls(
            years=int(match["y"] or 0), months=int(match["m"] or 0), days=int(match["d"] or 0)
        )

    def after(self, start: datetime) -> datetime:
        """`start` plus this period (month ends clamp: 31 Jan + P1M = 28/29 Feb)."""
        month_index = start.month - 1 + self.months + 12 * self.years
        year, month = start.year + month_index // 12, month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    def before(self, end: datetime) -> datetime:
        """`end` minus this period (month ends clamp: 31 Mar - P1M = 28/29 Feb)."""
        month_index = end.month - 1 - self.months - 12 * self.years
        year, month = end.year + month_index // 12, month_index % 12 + 1
        day = min(end.day, calendar.monthrange(year, month)[1])
        return end.replace(year=year, month=month, day=day) - timedelta(days=self.days)

    @property
    def empty(self) -> bool:
        """True for P0D (no time at all)."""
        return not (self.years or self.months or self.days)

    def __str__(self) -> str:
        parts = [
            f"{n}{u}" for n, u in ((self.years, "Y"), (self.months, "M"), (self.days, "D")) if n
        ]
        return "P" + ("".join(parts) or "0D")


class PurposeRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    basis: Basis
    default: bool = False
    gpc_applies: bool = False
    reconsent_from: str | None = None
    categories: list[str] = Field(default_factory=list)
    description: str = ""
    continues_when_restricted: list[Continues] = Field(default_factory=list)

    @model_validator(mode="after")
    def _contract_is_always_allowed(self) -> PurposeRule:
        if self.basis in NECESSARY and not self.default:
            raise ValueError(f"a {self.basis.value} purpose is always allowed: set default: true")
        if self.basis is Basis.CONSENT and self.default:
            raise ValueError("a consent purpose cannot default to allowed (GDPR Art. 7)")
        if len(set(self.continues_when_restricted)) != len(self.continues_when_restricted):
            raise ValueError("continues_when_restricted names a ground twice")
        return self

    @property
    def necessary(self) -> bool:
        """A contract or legal-obligation purpose: always allowed, needs no consent."""
        return self.basis in NECESSARY

    @property
    def withdrawable(self) -> bool:
        """Contract and legal-obligation purposes cannot be withdrawn."""
        return self.basis not in NECESSARY


class PurposeCatalogue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # consent.state.v1 lists every purpose, and the contract bounds that list (maxProperties)
    purposes: dict[str, PurposeRule] = Field(max_length=MAX_ITEMS)

    def get(self, purpose: str) -> PurposeRule | None:
        """The rule for `purpose`, or None when the catalogue does not know it."""
        return self.purposes.get(purpose)

    def gpc_purposes(self) -> list[str]:
        """Purposes a GPC signal withdraws."""
        return [name for name, rule in self.purposes.items() if rule.gpc_applies]


def _period(value: Any) -> Any:
    return Period.parse(value) if isinstance(value, str) else value


class RollingRule(BaseModel):
    """Keep `keep` while the account is open: every `every`, purge what is older (policy 1.3)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep: Period
    every: Period = Period(months=1)

    @model_validator(mode="before")
    @classmethod
    def _parse_periods(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {k: _period(v) if k in ("keep", "every") else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _some_time(self) -> RollingRule:
        if self.keep.empty or self.every.empty:
            raise ValueError("keep and every must be longer than P0D")
        return self


class CategoryRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str
    trigger: Literal["account_closed"] = "account_closed"
    period: Period
    period_from: Literal["subscription"] | None = None
    legal_obligation: str | None = None
    also_on_withdrawal: str | None = None
    note: str = ""
    purposes: list[str] = Field(default_factory=list)
    source: str = ""
    while_open: RollingRule | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse_period(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("period"), str):
            value = {**value, "period": Period.parse(value["period"])}
        return value


class RetentionRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # request.status.v1 lists an outcome per category, bounded by the contract (maxItems)
    categories: dict[str, CategoryRule] = Field(max_length=MAX_ITEMS)

    def owners(self) -> dict[str, list[str]]:
        """Each owner and the categories it holds."""
        found: dict[str, list[str]] = {}
        for name, rule in self.categories.items():
            found.setdefault(rule.owner, []).append(name)
        return found

    def rolling(self) -> dict[str, RollingRule]:
        """Categories kept for a rolling limit while the account is open, with their rule."""
        return {n: r.while_open for n, r in self.categories.items() if r.while_open is not None}


def load_config(path: Path, model: type[BaseModel]) -> Any:
    """Read a YAML file into `model`; raises ConfigError naming the file and the fields."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc


def load_purposes(path: Path = PURPOSES_FILE) -> PurposeCatalogue:
    """Load and validate the purpose catalogue; raises ConfigError."""
    catalogue: PurposeCatalogue = load_config(path, PurposeCatalogue)
    return catalogue


def load_retention(
    path: Path = RETENTION_FILE, purposes: PurposeCatalogue | None = None
) -> RetentionRules:
    """Load and validate the retention rules against the purpose catalogue (by default the
    shipped one); raises ConfigError, naming the file, category and purpose of an unknown one."""
    rules: RetentionRules = load_config(path, RetentionRules)
    check_purposes(path, rules, load_purposes() if purposes is None else purposes)
    return rules


def check_purposes(path: Path, rules: RetentionRules, purposes: PurposeCatalogue) -> None:
    """Every purpose a retention rule names is in the catalogue (GDPR Art. 15(1)(a) tells them)."""
    for category, rule in rules.categories.items():
        named = [("purposes", p) for p in rule.purposes]
        if rule.also_on_withdrawal:
            named.append(("also_on_withdrawal", rule.also_on_withdrawal))
        for field, purpose in named:
            if purposes.get(purpose) is None:
                raise ConfigError(
                    f"{path}: categories.{category}.{field}: unknown purpose {purpose!r} "
                    f"(not in the purpose catalogue {PURPOSES_FILE.name})"
                )
