"""Bad input against every real service, judged by an oracle independent of their decoder.

Cases come from `tests/support/malformed.py` (valid events of each service's inbound topics,
each with one mutation whose effect the contract's JSON Schemas decide; fresh each run, the
seed printed, `PP_ORACLE_SEED` replays it). A sample of a few hundred per service goes through
the running consent, retention and export services: every accepted case has its inbox row
(and, in consent, its projection row), every refused case exactly one dead letter with the
expected reason, ignored ones leave nothing; the service keeps consuming. The bulk of the
cases (over 10,000 a run) is judged without Kafka: tests/unit/contract/test_oracle.py and
tests/db/consent/test_oracle_pipeline.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from shared.contract.codec import encode
from shared.contract.topics import TOPIC_OF_TYPE, Topics
from tests.faults.harness import (
    ServiceProcess,
    group_caught_up,
    inbound_topics,
    outbox_published,
    processes,
    query,
    read_all,
    settled_dead_letters,
)
from tests.faults.stats import STATS
from tests.faults.test_consent_faults import consent
from tests.faults.test_retention_export_faults import export_service, retention
from tests.faults.workloads import consent_stream
from tests.support.infra import ROOT, Infra
from tests.support.kafka import produce
from tests.support.malformed import (
    BASE_DATA,
    SEED_ENV,
    Builder,
    Case,
    distinct_malformed,
    generate,
    reason_matches,
    seed_from_env,
)

pytestmark = pytest.mark.faults

SAMPLE = 500
"""Cases per service through the real process (the bulk is judged without Kafka)."""
NOT_FROM_NOWHERE = {
    "retention": {
        "deletion.completed.v1",
        "deletion.failed.v1",
        "rectification.completed.v1",
        "rectification.failed.v1",
        "restriction.completed.v1",
        "restriction.failed.v1",
        "purge.completed.v1",
        "purge.failed.v1",
        "request.extended.v1",
    },
    "export": {"export.part.v1", "export.part_failed.v1", "request.extended.v1"},
}
"""Types a service refuses by its own rules unless it issued the job or knows the request
(receipts, parts, extensions): valid by contract, so left out of the sample."""
CHANGES_STATE = frozenset(
    {
        "consent.granted.v1",
        "consent.withdrawn.v1",
        "consent.gpc_signal.v1",
        "processing.restricted.v1",
        "processing.objected.v1",
    }
)
"""Consent event types that always give a new subject a projection row."""


@dataclass(frozen=True)
class Raw:
    kind: str
    key: bytes | None
    value: bytes | None


async def produce_cases(
    bootstrap: str, topic: str | Callable[[Any], str], cases: list[Any]
) -> list[tuple[str, int, int]]:
    """Produce in order (to `topic`, or the topic `topic(case)` names); where each landed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, max_request_size=1_200_000
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic if isinstance(topic, str) else topic(c), key=c.key, value=c.value
            )
            for c in cases
        ]
        return [((m := await f).topic, m.partition, m.offset) for f in futures]
    finally:
        await producer.stop()


def sample(service: str, topics: Topics, seed: int) -> list[Case]:
    """Cases over the types on the topics `service` reads (those it ignores included)."""
    read = set(inbound_topics(f"services.{service}.app", topics))
    types = {
        t
        for t, field in TOPIC_OF_TYPE.items()
        if getattr(topics, field) in read and t not in NOT_FROM_NOWHERE.get(service, set())
    }
    cases = generate(seed, SAMPLE, types & set(BASE_DATA), tag=f"{service[:3]}{seed % 10**6}")
    if service == "consent":
        cases += huge(seed)
    return cases


def huge(seed: int) -> list[Case]:
    """Over the record limit (MAX_EVENT_BYTES, 512 KiB) yet under the broker's 1 MB: an event
    with a big extra field, and junk. Both are refused unparsed, as too_large (contract 1.2.0)."""
    import random

    builder = Builder(random.Random(seed), ["consent.granted.v1"], f"huge{seed % 10**6}")
    builder.event_type = "consent.granted.v1"
    event = builder.base("consent.granted.v1")
    event["data"]["x_blob"] = "b" * 900_000
    return [
        builder.case("huge event", event, "too_large"),
        builder.case("huge malformed", event, "too_large", value=b"{" + b"a" * 1_000_000),
    ]


async def judge(
    service: ServiceProcess,
    infra: Infra,
    topics: Topics,
    schema: str,
    cases: list[Case],
    accepts: frozenset[str],
) -> list[str]:
    """Send the cases, wait for positive signals, and list what differs from the oracle."""
    positions = await produce_cases(
        infra.kafka, lambda c: getattr(topics, TOPIC_OF_TYPE[c.event_type]), cases
    )
    STATS.events_sent += len(cases)
    STATS.malformed_inputs += distinct_malformed(cases)
    await group_caught_up(
        infra.kafka, f"g-{schema}", {topic for topic, _, _ in positions}, timeout=180
    )
    await outbox_published(infra.database_url, schema)
    dead: dict[tuple[str, int, int], list[str]] = {}
    for r in await read_all(infra.kafka, topics.deadletter, timeout=60, settle=0):
        h = {k: v.decode() for k, v in r.headers}
        at = (h["original_topic"], int(h["original_partition"]), int(h["original_offset"]))
        dead.setdefault(at, []).append(h["error"])
    inbox = {
        (r["source"], r["event_id"])
        for r in await query(infra.database_url, f'SELECT source, event_id FROM "{schema}".inbox')
    }
    subjects: set[str] = set()
    if "consent" in service.app_module:
        rows = await query(infra.database_url, f'SELECT subject_id FROM "{schema}".subjects')
        subjects = {r["subject_id"] for r in rows}
    problems = []
    for case, at in zip(cases, positions, strict=True):
        outcome, reason = case.expect(accepts)
        STATS.verdicts[f"{outcome} {reason}".strip()] += 1
        errors = dead.pop(at, [])
        recorded = (case.source, case.event_id) in inbox
        if outcome == "refused":
            wrong = len(errors) != 1 or not reason_matches(reason, errors[0])
            problem = f"dead letters {errors}, want one for {reason}" if wrong else ""
        elif errors:
            problem = f"dead-lettered {errors}, want {outcome}"
        elif outcome == "ignored":
            problem = "in the inbox, want ignored" if recorded else ""
        elif not recorded:
            problem = "accepted but not in the inbox"
        elif subjects and case.event_type in CHANGES_STATE and case.subject not in subjects:
            problem = "accepted but no projection row"
        else:
            problem = ""
        if problem:
            problems.append(f"{service.label}: {case.mutation} ({case.event_type}): {problem}")
    problems += [f"{service.label}: unexpected dead letters at {at}" for at in dead]
    return problems


ServiceFactory = Callable[[Infra, Topics, str, Path, str], ServiceProcess]


@pytest.mark.timeout(400)
async def test_every_service_refuses_exactly_what_the_oracle_refuses_and_keeps_consuming(
    infra, spaces, service_logs
):
    seed = seed_from_env()
    factories: dict[str, ServiceFactory] = {
        "consent": consent,
        "retention": retention,
        "export": export_service,
    }
    runs: list[tuple[str, ServiceProcess, Topics, str]] = []
    for name, make in factories.items():
        topics, schema = await spaces()
        runs.append(
            (name, make(infra, topics, schema, service_logs, f"{name}-oracle"), topics, schema)
        )
    async with processes(*(run[1] for run in runs)):
        for _, service, _, _ in runs:
            service.start()
        for _, service, _, _ in runs:
            await service.wait_ready()

        async def one(name: str, service: ServiceProcess, topics: Topics, schema: str) -> list[str]:
            handlers = __import__(f"services.{name}.handlers", fromlist=["HANDLERS"])
            cases = sample(name, topics, seed + len(name))
            return await judge(
                service, infra, topics, schema, cases, frozenset(handlers.HANDLERS.accepts)
            )

        found = await asyncio.gather(*(one(*run) for run in runs))
        for _, service, _, _ in runs:
            assert await service.readyz() == 200
            await service.terminate()
    problems = [p for part in found for p in part]
    STATS.notes.append(f"bad input: oracle seed {seed} ({SEED_ENV}={seed} replays it)")
    assert problems[:30] == [], f"{len(problems)} cases differ; replay with {SEED_ENV}={seed}"
    for _, service, _, _ in runs:
        assert service.stopped_cleanly()


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
    # the CLI validates first: the contract bounds unknown fields (16 KiB per object), so it
    # refuses the event naming the field and the bound before the broker would
    assert proc.returncode == 2
    assert "too large" in stderr.decode()
    assert "over the limit of 16384" in stderr.decode()


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
        await produce_cases(infra.kafka, topics.consent_changes, [Raw("good", *encode(good))])
        STATS.malformed_inputs += 1
        states = await read_all(
            infra.kafka, topics.consent_state, until=lambda r: len(r) >= 1, timeout=60, settle=0
        )
        dead = await settled_dead_letters(infra, topics, schema, service.app_module)
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
            await produce_cases(bootstrap, topic, [Raw("at the limit", b"usr_limit", value)])
            return value
        except MessageSizeTooLargeError:
            size -= 64
