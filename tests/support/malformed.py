"""Bad (and valid but unusual) inbound events built by construction, each with its verdict.

The oracle is independent of the services' decoder: every case starts from a valid event of
an inbound type (plain JSON written here) and gets one mutation whose effect on validity
follows from the contract's checked-in JSON Schemas (`shared/contract/schemas/`) and the
CloudEvents rules: drop a required field -> invalid, add an unknown field -> valid, a value of
a JSON type the schema does not allow -> invalid, an unknown type -> dead letter, bytes that
are not JSON -> undecodable, key != subject -> key mismatch, same source + id with other
content -> conflict. Valid-but-unusual events (unicode subjects, extensions, far-future and
ancient times, optional fields omitted, a re-sent identical copy) count as accepted.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import string
import uuid
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "shared" / "contract" / "schemas"
SEED_ENV = "PP_ORACLE_SEED"

REASONS: Mapping[str, tuple[str, ...]] = {
    "undecodable": ("not a CloudEvents structured JSON event",),
    "invalid": ("invalid ", "missing required attribute", "not a CloudEvents structured JSON"),
    "unknown_type": ("unknown event type",),
    "too_large": ("too large ", "event of "),
    "key_mismatch": ("Kafka key must equal the event's subject",),
    "conflict": ("conflict: same source and id, other content",),
    "tombstone": ("empty value",),
}
"""Reason class -> the dead letter `error` header prefixes that express it."""

_ANY = "2026-11-01T09:00:00Z"
BASE_DATA: Mapping[str, Callable[[int], dict[str, Any]]] = {
    "account.signed_up.v1": lambda n: {
        "account_id": f"acc_{n}",
        "jurisdiction": "DE",
        "policy_version": "2026-10",
        "consents": [{"purpose": "marketing_email", "granted": True}],
    },
    "account.closed.v1": lambda n: {"account_id": f"acc_{n}", "closed_at": _ANY},
    "account.reopened.v1": lambda n: {"account_id": f"acc_{n}", "reopened_at": _ANY},
    "subscription.changed.v1": lambda n: {"account_id": f"acc_{n}", "plan": "pro"},
    "consent.granted.v1": lambda n: {
        "purpose": "marketing_email",
        "source": "web_form",
        "policy_version": "2026-10",
        "evidence": {"ip_hash": f"h{n}"},
    },
    "consent.withdrawn.v1": lambda n: {"purpose": "marketing_email", "source": "api"},
    "consent.gpc_signal.v1": lambda n: {"source": "web_form"},
    "processing.restricted.v1": lambda n: {"purposes": ["analytics_cookies"], "reason": "r"},
    "processing.objected.v1": lambda n: {"purposes": ["personalisation"]},
    "restriction.lifted.v1": lambda n: {"purposes": ["analytics_cookies"]},
    "erasure.requested.v1": lambda n: {
        "request_id": f"req_{n}",
        "scope": "all",
        "verified_by": "support:1",
    },
    "export.requested.v1": lambda n: {"request_id": f"req_{n}", "verified_by": "portal:1"},
    "rectification.requested.v1": lambda n: {
        "request_id": f"req_{n}",
        "category": "crm_data",
        "fields": {"email": "someone@example.org"},
    },
    "request.cancelled.v1": lambda n: {"request_id": f"req_{n}"},
    "request.extended.v1": lambda n: {
        "request_id": f"req_{n}",
        "reason": "complex request",
        "new_deadline": "2027-01-01T00:00:00Z",
    },
    "legal_hold.placed.v1": lambda n: {"hold_id": f"hold_{n}", "reason": "court_order"},
    "legal_hold.released.v1": lambda n: {"hold_id": f"hold_{n}"},
    "deletion.completed.v1": lambda n: {"job_id": f"job_{n}", "owner": "crm"},
    "deletion.failed.v1": lambda n: {"job_id": f"job_{n}", "owner": "crm", "error": "down"},
    "rectification.completed.v1": lambda n: {"job_id": f"job_{n}", "owner": "crm"},
    "rectification.failed.v1": lambda n: {"job_id": f"job_{n}", "owner": "crm", "error": "x"},
    "export.part.v1": lambda n: {
        "job_id": f"job_{n}",
        "request_id": f"req_{n}",
        "owner": "crm",
        "category": "crm_data",
        "part_index": 0,
        "part_count": 1,
        "location": "file:///exchange/part-0.json",
        "sha256": "0" * 64,
    },
    "export.part_failed.v1": lambda n: {
        "job_id": f"job_{n}",
        "request_id": f"req_{n}",
        "owner": "crm",
        "error": "owner down",
    },
    # rolling retention (1.1.0)
    "purge.completed.v1": lambda n: {"job_id": f"job_{n}", "owner": "analytics"},
    "purge.failed.v1": lambda n: {"job_id": f"job_{n}", "owner": "analytics", "error": "x"},
    # disclosures to authorities (1.1.0)
    "disclosure.recorded.v1": lambda n: {
        "disclosure_id": f"disc_{n}",
        "authority": "Amtsgericht Berlin",
        "authority_kind": "court",
        "legal_basis": "GDPR Art. 6(1)(c)",
        "reference": f"AZ {n}",
        "categories": ["crm_data"],
        "disclosed_at": _ANY,
        "disclosed_by": "legal:staff_1",
    },
    # policy changes (1.1.0)
    "policy.published.v1": lambda n: {
        "version": f"2027-{n % 12 + 1:02d}",
        "effective_at": _ANY,
        "summary": "new analytics provider",
    },
}
"""A valid `data` of every inbound event type (written here, not by the contract models)."""

COUPLED = frozenset(
    {"purposes", "categories", "scope", "account_id", "sealed", "location", "part_index"}
)
"""Fields in cross-field rules the JSON Schema cannot state: never dropped as 'optional'."""

ENVELOPE_OPTIONAL = ("specversion", "datacontenttype")
"""Attributes the JSON Schemas leave out of `required` (they have defaults): omitting is valid."""

METACHARACTERS = (
    "'; DROP TABLE subjects; --",
    "$(touch /tmp/pp-pwned)",
    "usr|cat /etc/passwd",
    '"quoted" \\ backslash',
    "../../etc/passwd",
    "%s%s%n",
    "usr\ttab\nnewline",
    "${jndi:ldap://x}",
)
# No U+0000: the contract lets a subject hold it, but PostgreSQL text cannot, and the services
# dead-letter such an event as a handler error (an open gap between contract and storage).
UNICODE = "äöüßéñçøåłžčğış雪東京한국어•ᴥ•🙂🚀👩‍💻ﷺ\u200b\u2028\u00a0Ωπ∑√∞"


@dataclass(frozen=True)
class Case:
    """One Kafka record and what the contract says must become of it."""

    n: int
    mutation: str
    event_type: str
    """The type of the event (of its base event when the mutation broke the type)."""
    key: bytes | None
    value: bytes | None
    refusal: str = ""
    """Decoder-level reason class ("" when the contract accepts the bytes as `event_type`)."""
    pipeline: str = ""
    """Consumer-level outcome of a valid event: "", key_mismatch, conflict or resent."""
    source: str = ""
    event_id: str = ""
    subject: str = ""

    def expect(self, accepts: AbstractSet[str]) -> tuple[str, str]:
        """(outcome, reason class) for a service accepting `accepts`: accepted/ignored/refused."""
        if self.refusal:
            return "refused", self.refusal
        if self.event_type not in accepts:
            return "ignored", ""
        if self.pipeline in ("key_mismatch", "conflict"):
            return "refused", self.pipeline
        return "accepted", ""

    @property
    def malformed(self) -> bool:
        """Refused by every service that reads the topic (decoder) or that takes the type."""
        return bool(self.refusal or self.pipeline in ("key_mismatch", "conflict"))


def reason_matches(reason_class: str, error: str) -> bool:
    """Whether a dead letter's `error` header text expresses `reason_class`."""
    return error.startswith(REASONS[reason_class])


def seed_from_env() -> int:
    """The run's seed: `PP_ORACLE_SEED` replays one, otherwise a fresh one."""
    given = os.environ.get(SEED_ENV)
    return int(given) if given else secrets.randbits(32)


@cache
def schema(event_type: str) -> dict[str, Any]:
    """The checked-in JSON Schema of `event_type`."""
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())
    return loaded


@cache
def known_types() -> frozenset[str]:
    """Every event type the contract names (its schema files)."""
    return frozenset(p.name.removesuffix(".json") for p in SCHEMA_DIR.glob("*.json"))


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = {**root["$defs"][node["$ref"].rsplit("/", 1)[1]], **node}
        node.pop("$ref")
    return node


def _alternatives(root: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(root, node)
    if "anyOf" in node:
        return [alt for sub in node["anyOf"] for alt in _alternatives(root, sub)]
    return [node]


def _json_types(root: dict[str, Any], node: dict[str, Any]) -> set[str]:
    types: set[str] = set()
    for alt in _alternatives(root, node):
        if "type" in alt:
            types.add(alt["type"])
        for value in [*alt.get("enum", []), *(["const"] if "const" in alt else [])]:
            types.add("string" if isinstance(value, str) else "other")
    return types


def _wrong_values(root: dict[str, Any], node: dict[str, Any]) -> list[Any]:
    """Values no schema alternative allows and pydantic's lax mode never coerces."""
    alts = _alternatives(root, node)
    types = _json_types(root, node)
    timelike = any(a.get("format") == "date-time" for a in alts)
    picks: list[Any] = []
    if "object" not in types:
        picks.append({"k": 1})
    if "array" not in types:
        picks.append([1, 2])
    if "null" not in types:
        picks.append(None)
    if "string" not in types:
        picks.append("abc")
    if types <= {"string", "null"} and not timelike and not any("enum" in a for a in alts):
        picks.append(7)
    return picks


def _properties(root: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    node = _resolve(root, node)
    return dict(node.get("properties", {})), list(node.get("required", []))


class Builder:
    """Draws cases from `rng`; subjects and ids are fresh per case (a run's tag keeps them so)."""

    def __init__(self, rng: random.Random, types: Iterable[str], tag: str) -> None:
        self.rng = rng
        self.types = sorted(types)
        self.tag = tag
        self.n = 0
        self.event_type = ""

    def base(self, event_type: str) -> dict[str, Any]:
        self.n += 1
        return {
            "specversion": "1.0",
            "id": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "source": "oracle",
            "type": event_type,
            "subject": f"usr_{self.tag}_{self.n}",
            "time": "2026-11-01T09:00:00Z",
            "datacontenttype": "application/json",
            "data": BASE_DATA[event_type](self.n),
        }

    def case(self, mutation: str, event: dict[str, Any], refusal: str = "", **kw: Any) -> Case:
        key = kw.pop("key", str(event.get("subject")).encode("utf-8", "replace"))
        value = kw.pop("value", json.dumps(event, ensure_ascii=False).encode())
        return Case(
            self.n,
            mutation,
            self.event_type,
            key,
            value,
            refusal,
            source=str(event.get("source")),
            event_id=str(event.get("id")),
            subject=str(event.get("subject")),
            **kw,
        )

    def draw(self) -> list[Case]:
        """One mutation of a fresh base event (two cases for a conflict or a re-send)."""
        self.event_type = event_type = self.rng.choice(self.types)
        event = self.base(event_type)
        name = self.rng.choices(MUTATIONS, weights=[w for _, w in MUTATIONS])[0][0]
        mutate: Callable[[dict[str, Any]], list[Case]] = getattr(self, f"m_{name}")
        return mutate(event)

    # --- valid --------------------------------------------------------------------------

    def m_as_is(self, e: dict[str, Any]) -> list[Case]:
        return [self.case("valid as is", e)]

    def m_extension(self, e: dict[str, Any]) -> list[Case]:
        name = "x" + "".join(self.rng.choices(string.ascii_lowercase + string.digits, k=6))
        e[name] = self.rng.choice(["v", 12, True, "ünïcode"])
        return [self.case("valid: unknown extension attribute", e)]

    def m_extra_data(self, e: dict[str, Any]) -> list[Case]:
        value = self.rng.choice(["v", 3, None, [1, "a"], {"nested": {"deep": True}}, "雪"])
        e["data"][f"x_{self.rng.randrange(10**6)}"] = value
        return [self.case("valid: unknown data field", e)]

    def m_omit_optional(self, e: dict[str, Any]) -> list[Case]:
        _, required = _properties(schema(e["type"]), schema(e["type"])["properties"]["data"])
        optional = [p for p in e["data"] if p not in required and p not in COUPLED]
        if not optional or self.rng.random() < 0.3:
            field = self.rng.choice(ENVELOPE_OPTIONAL)
            e.pop(field)
            return [self.case(f"valid: {field} omitted (the schema's default)", e)]
        e["data"].pop(self.rng.choice(optional))
        return [self.case("valid: optional data field omitted", e)]

    def m_unicode_subject(self, e: dict[str, Any]) -> list[Case]:
        text = "".join(self.rng.choices(UNICODE, k=self.rng.randint(1, 40)))
        e["subject"] = f"{text}_{self.tag}_{self.n}"
        return [self.case("valid: unicode subject", e)]

    def m_metachar_subject(self, e: dict[str, Any]) -> list[Case]:
        e["subject"] = f"{self.rng.choice(METACHARACTERS)}_{self.tag}_{self.n}"
        return [self.case("valid: metacharacter subject", e)]

    def m_odd_time(self, e: dict[str, Any]) -> list[Case]:
        far = self.rng.random() < 0.5
        low, high = (
            (datetime(2100, 1, 1), datetime(9999, 1, 1))
            if far
            else (datetime(1, 2, 1), datetime(1970, 1, 1))
        )
        when = low + timedelta(seconds=self.rng.randrange(int((high - low).total_seconds())))
        offset = self.rng.choice(["Z", "+05:30", "-08:00"])
        e["time"] = when.replace(tzinfo=None).isoformat() + offset
        return [self.case(f"valid: {'far-future' if far else 'ancient'} time", e)]

    def m_longest(self, e: dict[str, Any]) -> list[Case]:
        field = self.rng.choice(["id", "subject"])
        e[field] = (e[field] + "_" + "z" * 200)[:200]
        return [self.case(f"valid: {field} at its maximum length", e)]

    def m_other_source(self, e: dict[str, Any]) -> list[Case]:
        first = self.case("valid: same id, first source", e)
        self.n += 1
        # its own data too: request, job and hold ids are unique per service by its own rules
        data = BASE_DATA[e["type"]](self.n)
        e = {**e, "source": "oracle-other", "subject": f"usr_{self.tag}_{self.n}", "data": data}
        return [first, self.case("valid: same id, other source", e)]

    def m_resent(self, e: dict[str, Any]) -> list[Case]:
        first = self.case("valid as is", e)
        return [first, replace(first, mutation="valid: re-sent identical copy", pipeline="resent")]

    # --- refused by the consumer ----------------------------------------------------------

    def m_conflict(self, e: dict[str, Any]) -> list[Case]:
        first = self.case("valid as is", e)
        e["data"] = {**e["data"], "x_tampered": self.rng.randrange(10**6)}
        return [
            first,
            self.case("conflict: same source and id, other content", e, pipeline="conflict"),
        ]

    def m_key(self, e: dict[str, Any]) -> list[Case]:
        key = self.rng.choice(
            [None, b"", b"usr_someone_else", e["subject"].upper().encode() + b"X", b"\xff\xfe"]
        )
        if key is None:  # a default SDK producer sends no key: the subject says whose it is
            return [self.case("no key (the subject gives it)", e, key=None)]
        return [self.case("key is not the subject", e, key=key, pipeline="key_mismatch")]

    # --- refused by the decoder -----------------------------------------------------------

    def m_drop_required(self, e: dict[str, Any]) -> list[Case]:
        # `type` has no default a reader could use: it names the schema
        field = self.rng.choice([*schema(e["type"])["required"], "type"])
        e.pop(field)
        return [self.case(f"required attribute {field} missing", e, "invalid")]

    def m_drop_required_data(self, e: dict[str, Any]) -> list[Case]:
        _, required = _properties(schema(e["type"]), schema(e["type"])["properties"]["data"])
        if not required:
            return self.m_drop_required(e)
        field = self.rng.choice(required)
        e["data"].pop(field)
        return [self.case(f"required data field {field} missing", e, "invalid")]

    def m_wrong_type(self, e: dict[str, Any]) -> list[Case]:
        root = schema(e["type"])
        top = self.rng.random() < 0.4
        props, _ = _properties(root, root if top else root["properties"]["data"])
        field = self.rng.choice(sorted(set(props) - {"type", "specversion", "datacontenttype"}))
        target = e if top else e["data"]
        target[field] = self.rng.choice(_wrong_values(root, props[field]))
        return [self.case(f"wrong type of {'' if top else 'data.'}{field}", e, "invalid")]

    def m_bad_value(self, e: dict[str, Any]) -> list[Case]:
        """A value of an allowed JSON type breaking a length, bound, enum, pattern or format."""
        root = schema(e["type"])
        found: list[tuple[dict[str, Any], str, Any]] = []
        for target, node in ((e, root), (e["data"], root["properties"]["data"])):
            props, _ = _properties(root, node)
            for field, prop in props.items():
                for alt in _alternatives(root, prop):
                    found.extend((target, field, bad) for bad in _breaking(alt))
        target, field, bad = self.rng.choice(found)
        target[field] = bad
        # over a maxLength or maxItems is refused as too_large (issue #23, lists contract
        # 1.3.0), every other break as invalid; _breaking's "x" * (max + 1), ["x"] * (max + 1)
        over_length = set(bad) == {"x"} if isinstance(bad, str | list) else False
        refusal = "too_large" if over_length else "invalid"
        return [self.case(f"bad value of {field}", e, refusal)]

    def m_naive_time(self, e: dict[str, Any]) -> list[Case]:
        e["time"] = "2026-11-01T09:00:00"
        return [self.case("time without offset", e, "invalid")]

    def m_unknown_type(self, e: dict[str, Any]) -> list[Case]:
        t = e["type"]
        names = [t[:-1] + "2", t.upper(), "", "x.v1", t.removesuffix(".v1"), 42, {"k": 1}, None]
        junk = "".join(self.rng.choices(string.printable, k=self.rng.randint(1, 30)))
        e["type"] = self.rng.choice([*names, junk])
        if isinstance(e["type"], str) and e["type"] in known_types():
            e["type"] = "oracle.unknown.v1"
        return [self.case("unknown event type", e, "unknown_type")]

    def m_undecodable(self, e: dict[str, Any]) -> list[Case]:
        raw = json.dumps(e).encode()
        kind = self.rng.randrange(5)
        if kind == 0:
            value, what = raw[: self.rng.randrange(1, len(raw))], "truncated JSON"
        elif kind == 1:
            at = raw.index(b'"subject": "') + 12
            junk = self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])
            value, what = raw[:at] + junk + raw[at:], "invalid UTF-8 in a string"
        elif kind == 2:
            value, what = b"\xff" + self.rng.randbytes(self.rng.randrange(300)), "random bytes"
        elif kind == 3:
            value, what = self.rng.choice([b"", b"   ", b"{", b"}{", b"{'a': 1}"]), "not JSON"
        else:
            value = self.rng.choice([b"[]", b"42", b'"event"', b"null", b"[" + raw + b"]"])
            what = "JSON but not an object"
        return [self.case(what, e, "undecodable", value=value)]

    def m_tombstone(self, e: dict[str, Any]) -> list[Case]:
        return [self.case("tombstone (no value)", e, "tombstone", value=None)]


def _breaking(alt: dict[str, Any]) -> list[Any]:
    bad: list[Any] = []
    if alt.get("type") == "string":
        if alt.get("minLength", 0) >= 1:
            bad.append("")
        if "maxLength" in alt:
            bad.append("x" * (alt["maxLength"] + 1))
        if "pattern" in alt:
            bad.append("not~matching")
        if alt.get("format") == "date-time":
            bad += ["2026-13-45T25:00:00Z", "yesterday"]
    if "enum" in alt:
        bad.append("not_in_enum")
    if alt.get("type") == "object" and alt.get("minProperties", 0) >= 1:
        bad.append({})
    if alt.get("type") == "array" and alt.get("minItems", 0) >= 1:
        bad.append([])
    if alt.get("type") == "array" and "maxItems" in alt:
        bad.append(["x"] * (alt["maxItems"] + 1))  # too many counts before what the items are
    if alt.get("type") == "integer":
        bad += [alt["minimum"] - 1] if "minimum" in alt else []
        bad += [alt["maximum"] + 1] if "maximum" in alt else []
        bad.append(1.5)
    return bad


MUTATIONS: list[tuple[str, int]] = [
    ("as_is", 3),
    ("extension", 3),
    ("extra_data", 3),
    ("omit_optional", 3),
    ("unicode_subject", 3),
    ("metachar_subject", 2),
    ("odd_time", 3),
    ("longest", 1),
    ("other_source", 1),
    ("resent", 2),
    ("conflict", 3),
    ("key", 4),
    ("drop_required", 6),
    ("drop_required_data", 6),
    ("wrong_type", 10),
    ("bad_value", 10),
    ("naive_time", 2),
    ("unknown_type", 5),
    ("undecodable", 8),
    ("tombstone", 1),
]
"""Mutation name (a `Builder.m_<name>` method) and its weight."""


def generate(
    seed: int, count: int, types: Iterable[str] | None = None, tag: str = ""
) -> list[Case]:
    """About `count` cases (pairs stay together, in order) over `types` (default: all inbound)."""
    builder = Builder(random.Random(seed), types or BASE_DATA, tag or f"o{seed % 10**6}")
    cases: list[Case] = []
    while len(cases) < count:
        cases += builder.draw()
    return cases


def distinct_malformed(cases: Iterable[Case]) -> int:
    """How many different (key, value) records among the refused-by-contract cases."""
    return len({(c.key, c.value) for c in cases if c.malformed})
