"""Bad input against the running consent service: every case dead-lettered with a reason or
handled as the contract says, and the service keeps consuming.

Hypothesis generates the cases (malformed JSON, wrong types, missing and extra fields, invalid
UTF-8, unknown types and versions, future and ancient timestamps, colliding ids, subject ids
with SQL and shell metacharacters); they all go to the real service in one stream, followed by
a good event. The oracle for each case is the contract's decoder.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contract.codec import DecodeError, decode, encode
from tests.faults.harness import processes, query, read_all
from tests.faults.stats import STATS
from tests.faults.test_consent_faults import consent
from tests.faults.workloads import consent_stream
from tests.support.infra import ROOT
from tests.support.kafka import produce

pytestmark = pytest.mark.faults

CASES_PER_KIND = 60
METACHARACTERS = [
    "'; DROP TABLE subjects; --",
    "usr'); DELETE FROM inbox; --",
    "$(touch /tmp/pp-pwned)",
    "`id`",
    "usr;ls -la",
    "usr|cat /etc/passwd",
    "usr && shutdown",
    '"quoted" \\ backslash',
    "../../etc/passwd",
    "%s%s%n",
    "usr\ttab\nnewline",
    "usr_ü_雪_🙂",
    "${jndi:ldap://x}",
    "usr%' OR '1'='1",
]
FIELDS = [
    ("id",),
    ("source",),
    ("type",),
    ("subject",),
    ("time",),
    ("specversion",),
    ("data",),
    ("data", "purpose"),
    ("data", "source"),
    ("data", "consent_type"),
    ("data", "evidence"),
    ("data", "expires_at"),
]
WRONG = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.text(max_size=30),
)


@dataclass(frozen=True)
class Case:
    kind: str
    key: bytes | None
    value: bytes | None


def base_events(n: int) -> list[dict[str, Any]]:
    """Valid consent changes as JSON dicts (some evidence carries personal markers)."""
    return [orjson.loads(encode(e)[1]) for e in consent_stream(n, 40, seed=66, tag="bad")]


def as_case(kind: str, event: dict[str, Any], key: bytes | None = None) -> Case:
    subject = event.get("subject")
    own_key = key if key is not None else str(subject).encode("utf-8", "replace")
    return Case(kind, own_key, json.dumps(event, ensure_ascii=False).encode("utf-8", "replace"))


def strategies(bases: list[dict[str, Any]]) -> st.SearchStrategy[Case]:
    base = st.sampled_from(bases).map(copy.deepcopy)

    def wrong_type(event: dict[str, Any], path: tuple[str, ...], value: Any) -> Case:
        target = event
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return as_case("wrong type", event, key=b"usr_wrong")

    def missing(event: dict[str, Any], path: tuple[str, ...]) -> Case:
        target = event
        for part in path[:-1]:
            target = target[part]
        target.pop(path[-1], None)
        return as_case("missing field", event)

    def extra(event: dict[str, Any], where: str, fields: dict[str, str]) -> Case:
        (event if where == "top" else event["data"]).update(
            {f"x_{k}": v for k, v in fields.items()}
        )
        return as_case("extra fields", event)

    def invalid_utf8(event: dict[str, Any], junk: bytes) -> Case:
        raw = json.dumps(event).encode()
        cut = raw.index(b'"subject"')
        return Case("invalid utf-8", event["subject"].encode(), raw[:cut] + junk + raw[cut:])

    def utf8_in_string(event: dict[str, Any]) -> Case:
        raw = json.dumps(event).encode().replace(b'"web"', b'"w\xc3\x28b"', 1)
        raw = raw.replace(b'"support"', b'"s\xed\xa0\x80t"', 1)
        return Case("invalid utf-8", event["subject"].encode(), raw)

    def unknown_type(event: dict[str, Any], name: str) -> Case:
        event["type"] = name
        return as_case("unknown type", event)

    def timestamp(event: dict[str, Any], when: datetime, naive: bool) -> Case:
        event["time"] = when.replace(tzinfo=None).isoformat() if naive else when.isoformat()
        return as_case("future/ancient time", event)

    def subject(event: dict[str, Any], name: str) -> Case:
        event["subject"] = name
        return as_case("metacharacter subject", event)

    metachar_subjects = st.one_of(
        st.sampled_from(METACHARACTERS),
        st.text(alphabet="'\";`$(){}|&<>\\%_*?!#~\n\t \x00abc", min_size=1, max_size=40),
    )
    return st.one_of(
        st.binary(max_size=300).map(lambda b: Case("malformed bytes", b"usr_junk", b)),
        st.text(max_size=200).map(lambda t: Case("malformed json", b"usr_junk", t.encode())),
        st.builds(
            lambda e, n: Case("truncated json", b"usr_junk", json.dumps(e).encode()[:n]),
            base,
            st.integers(0, 150),
        ),
        st.builds(wrong_type, base, st.sampled_from(FIELDS), WRONG),
        st.builds(missing, base, st.sampled_from(FIELDS)),
        st.builds(
            extra,
            base,
            st.sampled_from(["top", "data"]),
            st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=4),
        ),
        st.builds(invalid_utf8, base, st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])),
        base.map(utf8_in_string),
        st.builds(
            unknown_type,
            base,
            st.one_of(
                st.sampled_from(
                    ["consent.granted.v2", "consent.granted", "CONSENT.GRANTED.V1", "", "x.v1"]
                ),
                st.text(max_size=30),
            ),
        ),
        st.builds(
            timestamp,
            base,
            st.one_of(
                st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(1970, 1, 1)),
                st.datetimes(min_value=datetime(2100, 1, 1), max_value=datetime(9999, 12, 30)),
            ).map(lambda d: d.replace(tzinfo=UTC)),
            st.booleans(),
        ),
        st.builds(subject, base, metachar_subjects),
    )


def generate(bases: list[dict[str, Any]], count: int) -> list[Case]:
    """Let hypothesis draw `count` cases (no shrinking: they are judged after the run)."""
    drawn: list[Case] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategies(bases))
    def collect(case: Case) -> None:
        drawn.append(case)

    collect()
    return drawn


def colliding(bases: list[dict[str, Any]]) -> list[Case]:
    """Pairs with the same source and id but other content: the second is a conflict."""
    cases = []
    for event in bases[:15]:
        first = as_case("colliding id (original)", event)
        other = copy.deepcopy(event)
        other["data"]["policy_version"] = "tampered"
        cases += [first, as_case("colliding id (other content)", other)]
    return cases


def huge(bases: list[dict[str, Any]]) -> list[Case]:
    """Just under the broker's 1 MB limit: a valid event with a big extra field, and junk."""
    event = copy.deepcopy(bases[-1])
    event["data"]["x_blob"] = "b" * 900_000
    return [
        as_case("huge valid event", event),
        Case("huge malformed", b"usr_huge", b"{" + b"a" * 1_000_000),
    ]


def oracle(case: Case, accepts: set[str]) -> str:
    """What the contract says must happen: dead, ignored or processed."""
    if case.value is None:
        return "dead"
    try:
        event = decode(case.value)
    except DecodeError:
        return "dead"
    except Exception as exc:  # the decoder must turn every bad input into DecodeError
        raise AssertionError(f"{case.kind}: decode raised {exc!r}") from exc
    if event.type not in accepts:
        return "ignored"
    if (case.key or b"").decode("utf-8", "replace") != event.subject:
        return "dead"
    return "processed"


async def produce_cases(bootstrap: str, topic: str, cases: list[Case]) -> list[tuple[int, int]]:
    """Produce in order; the (partition, offset) of each case."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, max_request_size=1_200_000
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, key=c.key, value=c.value) for c in cases]
        return [((m := await f).partition, m.offset) for f in futures]
    finally:
        await producer.stop()


@pytest.mark.timeout(300)
async def test_malformed_and_hostile_input_is_dead_lettered_or_handled_and_consumption_goes_on(
    infra, topics, schema, service_logs
):
    from services.consent.handlers import HANDLERS

    accepts = HANDLERS.accepts

    bases = base_events(200)
    cases = [
        *generate(bases, CASES_PER_KIND * 10),
        *colliding(bases),
        *huge(bases),
        Case("tombstone", b"usr_tomb", None),
        Case("key is not the subject", b"usr_other", json.dumps(bases[0]).encode()),
    ]
    expected = [oracle(c, set(accepts)) for c in cases]
    good = consent_stream(1, 1, seed=99, tag="sentinel")[0]
    service = consent(infra, topics, schema, service_logs, "consent-bad-input")
    async with processes(service):
        service.start()
        await service.wait_ready()
        positions = await produce_cases(infra.kafka, topics.consent_changes, cases)
        await produce_cases(infra.kafka, topics.consent_changes, [Case("good", *encode(good))])
        STATS.malformed_inputs += len(cases)
        STATS.events_sent += len(cases) + 1

        async def sentinel_seen() -> bool:
            rows = await query(
                infra.database_url,
                f'SELECT 1 FROM "{schema}".inbox WHERE event_id = $1',
                good.id,
            )
            return bool(rows)

        from tests.faults.harness import poll

        await poll(sentinel_seen, timeout=120, what="the good event after the bad ones")
        wanted_dead = sum(1 for e in expected if e == "dead")
        dead = await read_all(
            infra.kafka,
            topics.deadletter,
            until=lambda r: len(r) >= wanted_dead,
            timeout=60,
            settle=2,
        )
        inbox = {
            (r["source"], r["event_id"])
            for r in await query(
                infra.database_url, f'SELECT source, event_id FROM "{schema}".inbox'
            )
        }
        assert await service.readyz() == 200
        await service.terminate()
    assert service.stopped_cleanly()

    dead_at = {
        (int(dict(r.headers)["original_partition"]), int(dict(r.headers)["original_offset"])): dict(
            r.headers
        )["error"].decode()
        for r in dead
    }
    problems = []
    for case, outcome, at in zip(cases, expected, positions, strict=True):
        reason = dead_at.pop(at, None)
        if outcome == "dead" and not reason:
            problems.append(f"{case.kind}: not dead-lettered ({case.value!r:.80})")
        elif outcome == "ignored" and reason is not None:
            problems.append(f"{case.kind}: dead-lettered though the service ignores it: {reason}")
        elif outcome == "processed" and reason is None:
            event = decode(case.value)
            if (event.source, event.id) not in inbox:
                problems.append(f"{case.kind}: neither processed nor dead-lettered")
    assert problems == []
    assert dead_at == {}  # nothing dead-lettered that was not one of the cases
    kinds = sorted({c.kind for c in cases})
    STATS.notes.append(
        f"bad input: {len(cases)} cases of {len(kinds)} kinds; {len(dead)} dead-lettered"
    )


async def test_over_the_broker_limit_the_producer_error_surfaces(infra, topics):
    event = consent_stream(1, 1, seed=5, tag="oversize")[0]
    big = event.model_copy(
        update={"data": event.data.model_copy(update={"x_blob": "z" * 1_200_000})}
    )
    STATS.malformed_inputs += 2
    with pytest.raises(MessageSizeTooLargeError):
        await produce(infra.kafka, topics.consent_changes, [big])

    raw = orjson.loads(encode(big)[1])
    raw = {k: raw[k] for k in ("type", "subject", "data")}
    path = ROOT / ".local" / f"oversize-{os.getpid()}.json"
    path.write_text(json.dumps(raw))
    try:
        cli = Path(sys.executable).with_name("privacy-plane")
        proc = await asyncio.create_subprocess_exec(
            str(cli),
            "publish",
            str(path),
            env={
                **os.environ,
                "PP_KAFKA_BOOTSTRAP_SERVERS": infra.kafka,
                "PP_TOPIC_PREFIX": topics.consent_changes.removesuffix("consent.changes"),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        path.unlink()
    assert proc.returncode == 2
    assert "larger than the broker accepts" in stderr.decode()


@pytest.mark.timeout(180)
async def test_poison_at_the_broker_limit_is_dead_lettered_without_blocking_the_outbox(
    infra, topics, schema, service_logs
):
    """The dead letter adds headers to the original bytes: it must still fit, or be cut."""
    good = consent_stream(1, 1, seed=98, tag="after-limit")[0]
    service = consent(infra, topics, schema, service_logs, "consent-limit")
    async with processes(service):
        service.start()
        await service.wait_ready()
        biggest = await largest_accepted(infra.kafka, topics.consent_changes)
        await produce_cases(infra.kafka, topics.consent_changes, [Case("good", *encode(good))])
        STATS.malformed_inputs += 1
        states = await read_all(
            infra.kafka, topics.consent_state, until=lambda r: len(r) >= 1, timeout=60, settle=0
        )
        dead = await read_all(
            infra.kafka, topics.deadletter, until=lambda r: len(r) >= 1, timeout=30, settle=0
        )
        await service.terminate()
    assert [orjson.loads(r.value)["subject"] for r in states] == [good.subject]
    assert len(dead) == 1
    assert dead[0].value == biggest or dict(dead[0].headers).get("value_truncated") == b"true"


async def largest_accepted(bootstrap: str, topic: str) -> bytes:
    """Produce the biggest malformed value the broker takes (searching down from its limit)."""
    size = 1_048_576
    while True:
        value = b"{" + b"x" * (size - 1)
        try:
            await produce_cases(bootstrap, topic, [Case("at the limit", b"usr_limit", value)])
            return value
        except MessageSizeTooLargeError:
            size -= 64
