"""The consent ledger: per person, a hash chain of what every event did (or did not do).

Ledger entries follow ISO/IEC TS 27560 and the Kantara consent receipt where a field fits:

| ledger field        | 27560 / Kantara                                   |
|---------------------|---------------------------------------------------|
| principal           | PII principal id (a keyed hash of the subject id) |
| subject_id          | PII principal id in clear; erased at erasure      |
| event_id            | consent receipt id (`consentReceiptID`)           |
| target              | purpose (or the restricted category)              |
| new_state/old_state | consent status (given, withdrawn, expired, ...)   |
| consent_type        | `consentType` (explicit, implied)                 |
| collection_method   | `collectionMethod` (web_form, api, cmp, ...)      |
| policy_version      | privacy notice / policy version                   |
| notice_id           | notice identifier                                 |
| jurisdiction        | `jurisdiction`                                    |
| occurred_at         | `consentTimestamp` (when it happened at source)   |
| received_at         | record time (when this service recorded it)       |
| expires_at          | validity end (`termination`)                      |
| evidence            | collection evidence (personal: ip hash, UA, TCF)  |

Each entry's hash covers its non-personal fields, the previous entry's hash and a salted digest
of the personal ones (`subject_id`, `evidence`); erasure deletes those and the subject's salt
and the chain still verifies. `state_at` reads a subject's past state back from its entries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson

from services.consent.document import UTC_ISO_MEMO, utc_iso
from services.consent.domain import (
    ACTIVE,
    CONSENT,
    CONSENT_EVENTS,
    ENUM_VALUES,
    GPC,
    OBJECTION,
    RESTRICTION,
    SUPERSEDED,
    ChangeEvent,
)
from services.consent.state import (
    EXPIRED,
    GRANTED,
    Change,
    PurposeRecord,
    ScopeRecord,
    SubjectState,
)
from shared.contract.events import AccountSignedUp, GpcSignal
from shared.plumbing.keyring import LEGACY_KID

GENESIS = "0" * 64


@dataclass(slots=True)  # treated as immutable; see domain.HOT_PATH_RECORDS
class Facts:
    """What an event says about itself, copied into each of its ledger entries."""

    event_id: str
    event_source: str
    event_type: str
    occurred_at: datetime
    collection_method: str | None = None
    consent_type: str | None = None
    policy_version: str | None = None
    notice_id: str | None = None
    jurisdiction: str | None = None
    expires_at: datetime | None = None
    evidence: dict[str, Any] | None = None


def facts(event: ChangeEvent) -> Facts:
    """The ledger facts of a contract event."""
    if isinstance(event, CONSENT_EVENTS):
        d = event.data
        evidence = d.evidence
        return Facts(
            event.id, event.source, event.type, event.time,
            ENUM_VALUES.get(d.source) or d.source.value,
            ENUM_VALUES.get(d.consent_type) or d.consent_type.value,
            d.policy_version, d.notice_id, d.jurisdiction, d.expires_at,
            None if evidence is None else _evidence(evidence),
        )  # fmt: skip
    if isinstance(event, AccountSignedUp):
        return Facts(
            event.id, event.source, event.type, event.time, "sign_up", "implied",
            event.data.policy_version, None, event.data.jurisdiction,
        )  # fmt: skip
    if isinstance(event, GpcSignal):
        return Facts(
            event.id, event.source, event.type, event.time, event.data.source.value, "gpc",
            evidence=_evidence(event.data.evidence),
        )  # fmt: skip
    return Facts(event.id, event.source, event.type, event.time)


def _evidence(evidence: Any) -> dict[str, Any] | None:
    if evidence is None:
        return None
    dumped: dict[str, Any] = evidence.model_dump(mode="json", exclude_none=True)
    return dumped or None


@dataclass(slots=True)  # treated as immutable; see domain.HOT_PATH_RECORDS
class LedgerEntry:
    principal: str
    seq: int
    event_id: str
    event_source: str
    event_type: str
    kind: str
    target: str
    old_state: str
    new_state: str
    applied: bool
    note: str | None
    collection_method: str | None
    consent_type: str | None
    policy_version: str | None
    notice_id: str | None
    jurisdiction: str | None
    expires_at: datetime | None
    occurred_at: datetime
    received_at: datetime
    personal_digest: str | None
    prev_hash: str
    hash: str
    subject_id: str | None = None
    evidence: dict[str, Any] | None = None
    kid: str = LEGACY_KID
    """The pseudonym key `principal` was made with (not hashed: rows before kids verify)."""


PERSONAL_FIELDS = ("subject_id", "evidence")
UNHASHED_FIELDS = (*PERSONAL_FIELDS, "hash", "kid")
HASHED_FIELDS = tuple(f for f in LedgerEntry.__slots__ if f not in UNHASHED_FIELDS)


def pseudonym(key: bytes, subject: str) -> str:
    """The subject's keyed hash: how the ledger and the suppression list name a person.

    The key rotates (a keyring, see pseudonyms.py): a row keeps the kid it was named under."""
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()


def _canonical(value: Any) -> bytes:
    """Compact JSON, keys sorted, datetimes as UTC ISO 8601: the bytes that are hashed.

    The bytes are those of `json.dumps(..., sort_keys=True, separators=(",", ":"))` (ASCII,
    escapes included). A flat array of strings, integers, booleans, nulls and datetimes (every
    chain entry) is written by orjson instead when the result is plain ASCII: there the two
    agree byte for byte (it would not escape DEL or non-ASCII, which take the slow path).
    """
    if type(value) is list or type(value) is tuple:
        if all(map(_PLAIN.__contains__, map(type, value))):  # no datetimes nor numbers
            fast = _plain_json(value)
            if fast is not None:
                return fast
        else:
            items: list[Any] = []
            for item in value:
                kind = type(item)
                if kind is str or item is None or kind is bool or (kind is int and _fits_i64(item)):
                    items.append(item)
                elif isinstance(item, datetime):
                    items.append(utc_iso(item))
                else:
                    break
            else:
                fast = _plain_json(items)
                if fast is not None:
                    return fast
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=utc_iso).encode()


_PLAIN = frozenset((str, bool, type(None)))
_dumps = orjson.dumps


def _plain_json(items: Sequence[Any]) -> bytes | None:
    """orjson's compact array of str, bool, None and 64-bit int items when it is plain ASCII
    without DEL (then it is json.dumps' byte for byte), else None."""
    try:
        fast = _dumps(items)
    except orjson.JSONEncodeError:  # e.g. a lone surrogate, which json.dumps escapes
        return None
    if fast.isascii() and b"\x7f" not in fast:
        return fast
    return None


def _fits_i64(value: int) -> bool:
    return -(2**63) <= value < 2**63


def personal_digest(salt: bytes, subject_id: str | None, evidence: Mapping[str, Any] | None) -> str:
    """Salted digest of an entry's personal fields (what the hash covers in their place)."""
    if evidence is None and type(subject_id) is str:  # `_canonical` of the common case
        fast = _plain_json((subject_id, None))
        if fast is not None:
            return _sha256(salt + fast).hexdigest()
    return _sha256(salt + _canonical([subject_id, evidence])).hexdigest()


def entry_hash(entry: LedgerEntry) -> str:
    """SHA-256 over the entry's non-personal fields (previous hash and personal digest included).

    What is hashed is the JSON array of the HASHED_FIELDS values, in that order.
    """
    return _hash([getattr(entry, f) for f in HASHED_FIELDS])


def _hash(values: Sequence[Any]) -> str:
    return hashlib.sha256(_canonical(values)).hexdigest()


@dataclass(frozen=True, slots=True)
class Head:
    seq: int = 0
    hash: str = GENESIS


def chain(
    head: Head,
    principal: str,
    subject: str,
    salt: bytes,
    items: Iterable[tuple[Facts, Change]],
    received_at: datetime,
    kid: str = LEGACY_KID,
) -> tuple[list[LedgerEntry], Head]:
    """Ledger entries for `items`, each chained to the one before; returns them and the new head.

    `kid` is the id of the pseudonym key that made `principal`, recorded on each entry."""
    entries = []
    seq, prev = head.seq, head.hash
    anonymous: str | None = None  # the personal digest without evidence, the same for every item
    for f, change in items:
        evidence = f.evidence
        if evidence is not None:
            digest = personal_digest(salt, subject, evidence)
        elif anonymous is None:
            digest = anonymous = personal_digest(salt, subject, None)
        else:
            digest = anonymous
        seq += 1
        values = (
            principal, seq, f.event_id, f.event_source, f.event_type,
            change.kind, change.target, change.old_state, change.new_state, change.applied,
            change.note, f.collection_method, f.consent_type, f.policy_version, f.notice_id,
            f.jurisdiction, f.expires_at, f.occurred_at, received_at, digest, prev,
        )  # fmt: skip
        prev = _sha256(_entry_canonical(values)).hexdigest()
        entries.append(LedgerEntry(*values, prev, subject, evidence, kid))
    if not entries:
        return entries, head
    return entries, Head(seq, prev)


_sha256 = hashlib.sha256
_EXPIRES_AT, _OCCURRED_AT, _RECEIVED_AT = 16, 17, 18  # the datetimes of a chain entry's values


def _entry_canonical(values: tuple[Any, ...]) -> bytes:
    """`_canonical(values)` of a chain entry, with fewer type tests: its datetimes and its
    number are where `chain` puts them and the rest must be str, bool or None (else, or when
    the datetimes are not plain datetimes, `_canonical` itself)."""
    expires_at, occurred_at, received_at = values[_EXPIRES_AT : _RECEIVED_AT + 1]
    seq = values[1]
    if (
        type(occurred_at) is datetime
        and type(received_at) is datetime
        and (expires_at is None or type(expires_at) is datetime)
        and type(seq) is int
        and 0 <= seq < 2**63
    ):
        items = list(values)
        items[1] = items[_EXPIRES_AT] = items[_OCCURRED_AT] = items[_RECEIVED_AT] = None
        if all(map(_PLAIN.__contains__, map(type, items))):
            items[1] = seq
            items[_EXPIRES_AT] = None if expires_at is None else utc_iso(expires_at)
            items[_OCCURRED_AT] = UTC_ISO_MEMO.get(occurred_at) or utc_iso(occurred_at)
            items[_RECEIVED_AT] = UTC_ISO_MEMO.get(received_at) or utc_iso(received_at)
            fast = _plain_json(items)
            if fast is not None:
                return fast
    return _canonical(values)


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    checked: int
    broken_at: int | None = None
    reason: str | None = None


def verify_chain(
    entries: Sequence[LedgerEntry], head: Head | None = None, salt: bytes | None = None
) -> ChainCheck:
    """Check a subject's entries (in seq order): numbering, links, hashes; the head if given.

    With the subject's salt, the personal fields still present are checked against their digest.
    """
    previous = Head()
    for entry in entries:
        problem = entry_problem(entry, previous, salt)
        if problem:
            return ChainCheck(False, previous.seq, previous.seq + 1, problem)
        previous = Head(entry.seq, entry.hash)
    if head is not None and head != previous:
        reason = f"chain ends at entry {previous.seq} but the head records entry {head.seq}"
        return ChainCheck(False, previous.seq, previous.seq + 1, reason)
    return ChainCheck(True, previous.seq)


def entry_problem(entry: LedgerEntry, previous: Head, salt: bytes | None) -> str | None:
    """What is wrong with `entry` after `previous` (its person's entry before), or None."""
    if entry.seq != previous.seq + 1:
        return f"entry {previous.seq + 1} is missing (found {entry.seq})"
    if entry.prev_hash != previous.hash:
        return f"entry {entry.seq} does not link to entry {previous.seq}"
    if entry_hash(entry) != entry.hash:
        return f"entry {entry.seq} was changed after it was written"
    erased = entry.subject_id is None and entry.evidence is None
    if (
        salt is not None
        and not erased
        and personal_digest(salt, entry.subject_id, entry.evidence) != entry.personal_digest
    ):
        return f"entry {entry.seq}: personal fields were changed after they were written"
    return None


def entry_record(entry: LedgerEntry) -> dict[str, Any]:
    """An entry as a JSON-ready record (history API and export)."""
    record = {}
    for name in LedgerEntry.__slots__:
        value = getattr(entry, name)
        record[name] = utc_iso(value) if isinstance(value, datetime) else value
    return record


def state_at(subject: str, entries: Iterable[LedgerEntry], at: datetime) -> SubjectState:
    """What the ledger says the subject's state was at `at` (by the events' own times).

    Superseded entries count: a late event that lost to a newer one still held before it.
    Refused ones (GPC, contract, unknown purpose) never held.
    """
    effective = [e for e in entries if e.occurred_at <= at and (e.applied or e.note == SUPERSEDED)]
    effective.sort(key=lambda e: (e.occurred_at, e.seq))
    purposes: dict[str, PurposeRecord] = {}
    scopes: dict[str, dict[str, ScopeRecord]] = {RESTRICTION: {}, OBJECTION: {}}
    gpc_since: datetime | None = None
    for e in effective:
        if e.kind == CONSENT and e.new_state == EXPIRED:
            current = purposes.get(e.target)
            if current is not None and current.state == GRANTED:
                purposes[e.target] = replace(current, state=EXPIRED)
        elif e.kind == CONSENT:
            purposes[e.target] = PurposeRecord(
                e.new_state, e.occurred_at, e.event_id, e.consent_type,
                e.collection_method, e.policy_version, e.expires_at,
            )  # fmt: skip
        elif e.kind in scopes:
            scopes[e.kind][e.target] = ScopeRecord(e.new_state == ACTIVE, e.occurred_at, e.event_id)
        elif e.kind == GPC:
            gpc_since = e.occurred_at if gpc_since is None else min(gpc_since, e.occurred_at)
    return SubjectState(subject, 0, purposes, scopes[RESTRICTION], scopes[OBJECTION], gpc_since)
