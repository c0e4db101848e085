"""Other teams' CloudEvents SDKs against the running services on real Kafka.

Producers: the Python SDK 1.x and 2.x (docs/examples/) and the Java SDK (java/Interop.java)
send every inbound event type in structured and in binary mode; every event must be taken by
each service that consumes its type (its inbox has it) and none may be refused as input. The
same event sent in both modes is applied once. Readers: the same SDKs read every outbound type
(with mode detection), including a row left in an outbox with the headers of before.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shlex
import shutil
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from shared.contract.codec import STRUCTURED_CONTENT_TYPE, decode, decode_kafka, new_event
from shared.contract.events import EVENT_TYPES
from shared.plumbing import db, outbox
from shared.plumbing.kafka import make_producer
from shared.plumbing.outbox import Outbox, OutboxRow
from shared.plumbing.relay import Relay
from tests.integration.interop.conftest import TOKEN, Stack, b64, missing_tool, unb64
from tests.packaging.examples import EXAMPLES
from tests.support.infra import ROOT
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration

R = TypeVar("R")
OURS = {"consent.state.v1", "export.job.v1", "deletion.job.v1", "rectification.job.v1"}
OURS |= {"request.status.v1"}
"""Types only Privacy Plane publishes (some of them consumed by another of its services)."""
OUTBOUND = sorted(OURS | {"export.part.v1"})  # consent answers export jobs with parts too
ACCOUNT_LEVEL = {"subscription.changed.v1", "legal_hold.placed.v1", "legal_hold.released.v1"}
REFUSED_AS_INPUT = ("undecodable", "invalid", "unknown_type", "key_mismatch", "conflict")
DOCS = ROOT / "docs"
IN_INBOX = "SELECT count(*) FROM {s}.inbox WHERE event_id = ANY($1)"


def inbound(stack: Stack) -> list[str]:
    """Every type another team produces for a service of ours."""
    return sorted(set().union(*stack.accepts.values()) - OURS)


def subject_of(event_type: str, tag: str) -> str:
    return "acc_7" if event_type in ACCOUNT_LEVEL else f"usr_{tag}"


def example(name: str) -> ModuleType:
    """A file of docs/examples/, imported as integrators would copy it."""
    spec = importlib.util.spec_from_file_location(name, DOCS / "examples" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def eventually(probe: Callable[[], Awaitable[R]], ok: Callable[[R], bool]) -> R:
    deadline = time.monotonic() + 30
    value = await probe()
    while not ok(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = await probe()
    return value


async def assert_taken(stack: Stack, ids: Mapping[str, list[str]]) -> None:
    """Each id is in the inbox of every service consuming its type; nothing was refused."""
    for service, accepts in stack.accepts.items():
        wanted = sorted({i for t, of_type in ids.items() if t in accepts for i in of_type})

        async def in_inbox(service: str = service, wanted: list[str] = wanted) -> int:
            return await stack.count(service, IN_INBOX, wanted)

        def complete(found: int, wanted: list[str] = wanted) -> bool:
            return found == len(wanted)

        found = await eventually(in_inbox, complete)
        assert found == len(wanted), service
    await assert_nothing_refused(stack)


async def assert_nothing_refused(stack: Stack) -> None:
    for service in stack.schemas:
        sql = "SELECT count(*) FROM {s}.deadlettered WHERE reason_kind = ANY($1)"
        assert await stack.count(service, sql, list(REFUSED_AS_INPUT)) == 0, service


async def send_raw(stack: Stack, items: list[tuple[str, Any, Any, list[Any]]]) -> None:
    """Send records as they are (key, value and headers made by an SDK)."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.infra.kafka, enable_idempotence=True)
    await producer.start()
    try:
        for topic, key, value, headers in items:
            key = key.encode() if isinstance(key, str) else key
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_python_sdk1_sends_every_inbound_type_in_either_mode(stack):
    sdk1 = example("python_sdk1")
    ids: dict[str, list[str]] = defaultdict(list)
    producer = AIOKafkaProducer(bootstrap_servers=stack.infra.kafka, enable_idempotence=True)
    await producer.start()
    try:
        for event_type in inbound(stack):
            for mode in ("structured", "binary"):
                subject = subject_of(event_type, f"sdk1_{mode}")
                event = sdk1.new_event(event_type, subject, EXAMPLES[event_type], "team-sdk1")
                message = getattr(sdk1, mode)(event)
                assert ("ce_specversion" in message.headers) is (mode == "binary")
                await sdk1.send(producer, stack.topics.for_type(event_type), message)
                ids[event_type].append(event["id"])
    finally:
        await producer.stop()
    await assert_taken(stack, ids)


async def test_python_sdk2_sends_every_inbound_type_in_either_mode(stack, sdk2):
    specs = [
        {"modes": [mode], "type": t, "subject": subject_of(t, f"sdk2_{mode}")}
        | {"source": "team-sdk2", "data": EXAMPLES[t]}
        for t in inbound(stack)
        for mode in ("structured", "binary")
    ]
    produced = sdk2({"produce": specs})["produced"]
    items: list[tuple[str, Any, Any, list[Any]]] = []
    ids: dict[str, list[str]] = defaultdict(list)
    for spec, message in zip(specs, produced, strict=True):
        headers = [(name, unb64(raw)) for name, raw in message["headers"]]
        value = unb64(message["value"])
        assert any(n.startswith("ce_") for n, _ in headers) is (spec["modes"] == ["binary"])
        event = decode_kafka(value, headers)  # the id the SDK gave it
        ids[event.type].append(event.id)
        items.append((stack.topics.for_type(spec["type"]), unb64(message["key"]), value, headers))
    await send_raw(stack, items)
    await assert_taken(stack, ids)


async def test_java_sdk_sends_every_inbound_type_and_its_events_take_effect(stack, java):
    def line(event_type: str, mode: str, subject: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "topic": stack.topics.for_type(event_type),
            "mode": mode,
            "type": event_type,
            "source": "team-java",
            "id": str(uuid.uuid4()),
            "subject": subject,
            "time": "2026-11-26T10:00:00Z",
            "data": data,
        }

    lines = [
        line(t, mode, subject_of(t, f"java_{mode}"), EXAMPLES[t])
        for t in inbound(stack)
        for mode in ("structured", "binary")
    ]
    grant = {"purpose": "marketing_email", "source": "web_form"}
    own = {"account_id": "acc_java"}  # an account no other test closed
    lifecycle = [
        line(t, "binary", "usr_java_closed", EXAMPLES[t] | own)
        for t in ("account.signed_up.v1", "account.closed.v1")
    ]
    consent = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack.runtimes["consent"].asgi()),
        base_url="http://consent",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    async def allowed() -> bool:
        answer = await consent.get(
            "/v1/subjects/usr_java_grant/decisions", params={"purpose": "marketing_email"}
        )
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["allowed"])

    async with consent:
        assert not await allowed()
        granted = line("consent.granted.v1", "binary", "usr_java_grant", grant)
        java("produce", stack.infra.kafka, lines=[*lines, granted, *lifecycle])
        assert await eventually(allowed, bool)
    timers = "SELECT count(*) FROM {s}.timers WHERE subject_id = 'usr_java_closed'"
    assert await eventually(lambda: stack.count("retention", timers), lambda n: n > 0) > 0
    ids: dict[str, list[str]] = defaultdict(list)
    for given in [*lines, granted, *lifecycle]:
        ids[given["type"]].append(given["id"])
    await assert_taken(stack, ids)


async def test_one_event_sent_in_both_modes_is_applied_once(stack, sdk2, java):
    """Each SDK sends one consent.granted in both modes, then a withdrawal: the subject's
    state is at version 2 (not 3), and the second copy was no conflict."""
    sdk1 = example("python_sdk1")
    grant = {"purpose": "marketing_email", "source": "web_form"}
    withdraw = EXAMPLES["consent.withdrawn.v1"]
    topic = stack.topics.for_type("consent.granted.v1")
    event = sdk1.new_event("consent.granted.v1", "usr_once_sdk1", grant, "team-sdk1")
    later = sdk1.new_event("consent.withdrawn.v1", "usr_once_sdk1", withdraw, "team-sdk1")
    items = [
        (topic, m.key, m.value, list(m.headers.items()))
        for m in (sdk1.structured(event), sdk1.binary(event), sdk1.binary(later))
    ]
    spec = {"type": "consent.granted.v1", "subject": "usr_once_sdk2", "source": "team-sdk2"}
    after = {"type": "consent.withdrawn.v1", "subject": "usr_once_sdk2", "source": "team-sdk2"}
    produced = sdk2(
        {
            "produce": [
                spec | {"modes": ["binary", "structured"], "data": grant},
                after | {"modes": ["binary"], "data": withdraw},
            ]
        }
    )["produced"]
    for message in produced:
        headers = [(name, unb64(raw)) for name, raw in message["headers"]]
        items.append((topic, unb64(message["key"]), unb64(message["value"]), headers))
    await send_raw(stack, items)
    same = {"topic": topic, "source": "team-java", "subject": "usr_once_java"}
    same |= {"time": "2026-11-26T10:00:00Z", "type": "consent.granted.v1", "data": grant}
    same["id"] = str(uuid.uuid4())
    later_java = same | {"id": str(uuid.uuid4()), "type": "consent.withdrawn.v1"}
    later_java["data"] = withdraw
    java_lines = [same | {"mode": "binary"}, same | {"mode": "structured"}]
    java_lines.append(later_java | {"mode": "binary"})
    java("produce", stack.infra.kafka, lines=java_lines)
    for subject in ("usr_once_sdk1", "usr_once_sdk2", "usr_once_java"):
        sql = f"SELECT coalesce(max(version), 0) FROM {{s}}.subjects WHERE subject_id = '{subject}'"

        async def version_of(sql: str = sql) -> int:
            return int(await stack.count("consent", sql))

        version = await eventually(version_of, lambda v: v >= 2)
        await asyncio.sleep(0.3)  # a third application would come right after
        assert await stack.count("consent", sql) == version == 2, subject
    await assert_nothing_refused(stack)


async def test_a_record_without_a_key_is_taken_by_its_subject(stack):
    """SDK 1.x keys by `partitionkey` when no key mapper is given: a default producer sends
    no key at all."""
    sdk1 = example("python_sdk1")
    event = sdk1.new_event(
        "consent.granted.v1", "usr_keyless", {"purpose": "marketing_email", "source": "api"}, "t"
    )
    from cloudevents.kafka import to_binary

    message = to_binary(event)  # no key mapper, no partitionkey
    assert message.key is None
    topic = stack.topics.for_type("consent.granted.v1")
    await send_raw(stack, [(topic, None, message.value, list(message.headers.items()))])
    await assert_taken(stack, {"consent.granted.v1": [event["id"]]})


@pytest.fixture(scope="module")
async def outbound(stack: Stack) -> list[Any]:
    """One record of every outbound type as the outbox relay publishes it (one of them from a
    row stored with the headers of before), plus what the services published meanwhile."""
    schema = stack.schemas["consent"].replace("_consent", "_outbox")
    conn = await asyncpg.connect(stack.infra.database_url)
    await db.migrate(conn, schema)
    await conn.execute(f'SET search_path TO "{schema}"')
    out = Outbox()
    for n, event_type in enumerate(OUTBOUND):
        model = EVENT_TYPES[event_type]
        data = model.model_fields["data"].annotation.model_validate(EXAMPLES[event_type])  # type: ignore[union-attr]
        event = new_event(model, subject=f"usr_out_{n}", data=data, source="privacy-plane.test")
        out.publish(stack.topics.for_type(event_type), event)
    old = out.rows[0]  # consent.state: stored before structured mode, relayed after it
    out.rows[0] = OutboxRow(old.topic, old.key, old.value, {"ce_type": "consent.state.v1"})
    await outbox.write(conn, out.rows, schema)
    producer = make_producer(stack.infra.kafka)
    await producer.start()
    try:
        relay = Relay(stack.infra.database_url, schema, producer, service="interop")
        while await relay.publish_batch(conn):
            pass
    finally:
        await producer.stop()
        await conn.close()
    topics = sorted({stack.topics.for_type(t) for t in OUTBOUND})
    records: list[Any] = []
    for topic in topics:
        records += [r for r in await read_topic(stack.infra.kafka, topic, settle=0.5) if ours(r)]
    assert {decode(r.value).type for r in records if r.value is not None} >= set(OUTBOUND)
    return records


def ours(record: Any) -> bool:
    """Whether Privacy Plane published `record` (other teams publish receipts too)."""
    if record.value is None:
        return True  # a tombstone: only consent.state has them
    event = decode_kafka(record.value, record.headers)
    return event.type in OUTBOUND and event.source.startswith("privacy-plane")


def expected(record: Any) -> dict[str, Any]:
    event = decode(record.value)
    return {"type": event.type, "id": event.id, "subject": event.subject}


async def test_every_outbound_record_is_structured_mode_with_no_ce_header(outbound):
    events = [r for r in outbound if r.value is not None]
    assert {r.headers for r in events} == {(("content-type", STRUCTURED_CONTENT_TYPE.encode()),)}


async def test_python_sdk2_reads_every_outbound_type_by_mode_detection(outbound, sdk2):
    events = [r for r in outbound if r.value is not None]
    given: list[dict[str, Any]] = [
        {"key": b64(r.key), "value": b64(r.value), "headers": []} for r in events
    ]
    for record, entry in zip(events, given, strict=True):
        entry["headers"] = [[name, b64(value)] for name, value in record.headers]
    seen = sdk2({"read": given})["read"]
    for record, event in zip(events, seen, strict=True):
        assert "error" not in event, event
        assert {k: event[k] for k in ("type", "id", "subject")} == expected(record)
        assert event["data"] == orjson.loads(record.value)["data"]
        assert event["datacontenttype"] == "application/json"


async def test_python_sdk1_reads_every_outbound_type_and_keeps_the_newest_state(stack, outbound):
    sdk1 = example("python_sdk1")
    wanted = {expected(r)["id"]: expected(r) for r in outbound if r.value is not None}
    topics = sorted({stack.topics.for_type(t) for t in OUTBOUND})
    consumer = sdk1.consumer(stack.infra.kafka, f"interop-{uuid.uuid4().hex}", *topics)
    await consumer.start()
    seen: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while set(wanted) - set(seen) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in (r for r in records if r.value is not None):
                    event = sdk1.read(record.key, record.value, list(record.headers))
                    seen[event["id"]] = event
    finally:
        await consumer.stop()
    for event_id, want in wanted.items():
        event = seen[event_id]
        assert {"type": event["type"], "id": event_id, "subject": event["subject"]} == want
        assert event["datacontenttype"] == "application/json"
    state = next(r for r in outbound if r.value is not None and b"consent.state.v1" in r.value)
    latest = sdk1.LatestStates()
    assert latest.apply(state.key, state.value, list(state.headers))
    assert not latest.apply(state.key, state.value, list(state.headers))  # not newer: dropped
    assert latest.apply(state.key, None, [])  # a tombstone: the subject was erased
    assert latest.states == {}


async def test_java_sdk_reads_every_outbound_type(stack, outbound, java):
    topics = sorted({stack.topics.for_type(t) for t in OUTBOUND})
    seen = {
        (entry["topic"], entry["partition"], entry["offset"]): entry
        for entry in java("read", stack.infra.kafka, *topics)
    }
    for record in outbound:
        entry = seen[(record.topic, record.partition, record.offset)]
        assert "error" not in entry, entry
        if record.value is None:
            assert entry["event"] is None
            continue
        got = entry["event"]
        assert {k: got[k] for k in ("type", "id", "subject")} == expected(record)
        assert got["datacontenttype"] == "application/json"
        assert got["data"] == orjson.loads(record.value)["data"]


async def test_the_command_line_example_publishes_a_structured_event(stack, tmp_path):
    if shutil.which("kcat") is None:
        missing_tool("kcat")
    command = section(DOCS / "integrating.md", "```sh\nkcat", "```").strip()
    event = (DOCS / "examples" / "consent-granted.json").read_text()
    (tmp_path / "consent-granted.json").write_text(event)
    topic = stack.topics.for_type("consent.granted.v1")
    args = shlex.split(command.replace("\\\n", " ").replace("consent.changes", topic))
    env = {"KAFKA_BOOTSTRAP_SERVERS": stack.infra.kafka, "PATH": "/usr/bin:/bin"}
    args = [a.replace("$KAFKA_BOOTSTRAP_SERVERS", stack.infra.kafka) for a in args]
    run = subprocess.run
    done = await asyncio.to_thread(
        run, args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    ids = {"consent.granted.v1": [decode(event.encode()).id]}
    await assert_taken(stack, ids)


def section(path: Path, start: str, end: str) -> str:
    """The text of `path` after the first `start` (its last word kept) up to `end`."""
    text = path.read_text()
    begin = text.index(start) + len(start) - len(start.split("\n")[-1])
    return text[begin : text.index(end, begin)]
