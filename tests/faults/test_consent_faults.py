"""The consent service under faults: kill -9 mid-stream, duplicates and reordering, resurrection.

Each scenario compares a disturbed run with an undisturbed run of the same events in its own
topics and schema: same projection, same ledger length per person, the same `consent.state`
ids with one content each.
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.contract.codec import new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import ConsentChangeData, ConsentGranted, ConsentSource
from shared.contract.topics import Topics
from tests.faults.harness import (
    ServiceProcess,
    copies,
    outbox_published,
    poll,
    processes,
    query,
    read_all,
    rebalance_under_load,
    send,
    service_env,
    settled_dead_letters,
    wait_inbox,
)
from tests.faults.stats import STATS
from tests.faults.workloads import BASE, consent_stream, erasure, signed_up
from tests.support.infra import Infra

pytestmark = pytest.mark.faults

EVENTS = 20_000
SUBJECTS = 2_000
PLANS = ["apply:2", "commit:3", "relay:400", "", "apply:5", "commit:2", "relay:50", ""]
"""Planned kill points, one per start; "" = SIGKILL from outside at a random moment."""


def consent(
    infra: Infra, topics: Topics, schema: str, logs: Path, label: str, **extra: str
) -> ServiceProcess:
    env = service_env(
        "CONSENT_",
        infra,
        topics,
        schema,
        extra={
            "CONSENT_LEDGER_KEY": "fault-suite-ledger-key",
            "CONSENT_BATCH_MAX_RECORDS": "200",
            **extra,
        },
    )
    return ServiceProcess(f"{label}-{schema}", env, logs, app_module="services.consent.app")


async def projection(infra: Infra, schema: str) -> dict[str, tuple[int, Any]]:
    rows = await query(
        infra.database_url, f'SELECT subject_id, version, doc FROM "{schema}".subjects'
    )
    return {r["subject_id"]: (r["version"], orjson.loads(r["doc"])) for r in rows}


async def ledger_lengths(infra: Infra, schema: str) -> Counter[str]:
    rows = await query(
        infra.database_url, f'SELECT principal, count(*) AS n FROM "{schema}".ledger GROUP BY 1'
    )
    return Counter({r["principal"]: int(r["n"]) for r in rows})


def last_states(records: Sequence[Any]) -> dict[str, Any]:
    """The newest `consent.state` data per subject (by version); None after a tombstone."""
    latest: dict[str, tuple[int, Any]] = {}
    for r in records:
        subject = r.key.decode()
        if r.value is None:
            latest[subject] = (10**9, None)
            continue
        event = orjson.loads(r.value)
        version = int(event["data"]["version"])
        if version >= latest.get(subject, (0, None))[0]:
            latest[subject] = (version, event["data"])
    return {s: d for s, (_, d) in latest.items()}


async def outcome(
    infra: Infra, topics: Topics, schema: str, expected_states: int
) -> tuple[dict[str, tuple[int, Any]], Counter[str], list[Any], list[Any]]:
    """Projection, ledger lengths, consent.state records and dead letters of one run."""
    states = await read_all(
        infra.kafka,
        topics.consent_state,
        until=lambda r: (
            len({x.value and orjson.loads(x.value)["id"] for x in r}) >= expected_states
        ),
        timeout=120,
        settle=1.5,
    )
    dead = await settled_dead_letters(infra, topics, schema, "services.consent.app")
    return await projection(infra, schema), await ledger_lengths(infra, schema), states, dead


async def undisturbed(
    infra: Infra,
    topics: Topics,
    schema: str,
    logs: Path,
    batches: Sequence[tuple[str, Sequence[CloudEvent[Any]]]],
    distinct: int,
) -> None:
    """One clean run: start, send every (topic, events) batch in order, wait, stop."""
    service = consent(infra, topics, schema, logs, "consent-clean")
    async with processes(service):
        service.start()
        await service.wait_ready()
        for topic, events in batches:
            await send(infra.kafka, topic, events)
        await wait_inbox(infra, schema, distinct)
        await service.terminate()
    assert service.stopped_cleanly()


async def expected_state_count(infra: Infra, schema: str) -> int:
    rows = await query(infra.database_url, f'SELECT sum(version) AS n FROM "{schema}".subjects')
    return int(rows[0]["n"] or 0)


@pytest.mark.timeout(900)
async def test_kill_9_consent_mid_stream_ends_like_an_undisturbed_run(infra, spaces, service_logs):
    events = consent_stream(EVENTS, SUBJECTS, seed=20, tag="kill9")
    clean_topics, clean_schema = await spaces()
    await undisturbed(
        infra,
        clean_topics,
        clean_schema,
        service_logs,
        [(clean_topics.consent_changes, events)],
        EVENTS,
    )

    topics, schema = await spaces()
    rng = random.Random(9)
    service = consent(infra, topics, schema, service_logs, "consent-kill9")
    async with processes(service):
        size = EVENTS // (len(PLANS) + 1)
        for n, plan in enumerate(PLANS):
            service.start(kill_at=plan)
            part = events[n * size : (n + 1) * size]
            producing = asyncio.create_task(send(infra.kafka, topics.consent_changes, part))
            if plan:
                await service.wait_exit(120)
            else:
                await service.wait_ready()
                await asyncio.sleep(rng.uniform(0.3, 2.0))
                service.kill()
            await producing
        service.start()
        await send(infra.kafka, topics.consent_changes, events[len(PLANS) * size :])
        await wait_inbox(infra, schema, EVENTS)
        await service.wait_ready()
        await service.terminate()
    assert service.stopped_cleanly()
    assert service.planned_kills() == sum(1 for p in PLANS if p)

    published = await expected_state_count(infra, clean_schema)
    clean = await outcome(infra, clean_topics, clean_schema, published)
    hurt = await outcome(infra, topics, schema, published)
    compare_runs(clean, hurt)


def compare_runs(
    clean: tuple[dict[str, tuple[int, Any]], Counter[str], list[Any], list[Any]],
    hurt: tuple[dict[str, tuple[int, Any]], Counter[str], list[Any], list[Any]],
) -> None:
    """The disturbed run equals the clean one: projection, ledger, outbound ids, dead letters."""
    clean_projection, clean_ledger, clean_states, clean_dead = clean
    projection_, ledger, states, dead = hurt
    clean_out, out = copies(clean_states), copies(states)
    missing = clean_out.ids - out.ids
    STATS.lost += len(set(clean_projection) - set(projection_)) + len(missing)
    STATS.doubled += out.conflicts + sum(max(0, ledger[p] - clean_ledger[p]) for p in clean_ledger)
    assert projection_ == clean_projection
    assert ledger == clean_ledger
    assert not missing
    assert out.ids == clean_out.ids
    assert out.conflicts == 0
    assert last_states(states) == last_states(clean_states)
    assert len(dead) == len(clean_dead)
    STATS.notes.append(
        f"consent run: {len(projection_)} subjects, {out.unique} consent.state events, "
        f"{out.extra_copies} re-sent copies (same id and bytes) removed by id"
    )


def replayed_and_shuffled(
    events: Sequence[CloudEvent[Any]], rng: random.Random
) -> list[CloudEvent[Any]]:
    """Every event twice, subjects interleaved at random, some neighbours swapped.

    The second copy of each event lands at a random later place of its subject's stream; in
    one subject in four, pairs of neighbouring events also arrive in the wrong order (the
    contract: a later-arriving older event never overrides newer state).
    """
    per_subject: dict[str, list[CloudEvent[Any]]] = {}
    for event in events:
        per_subject.setdefault(event.subject, []).append(event)
    streams: list[list[CloudEvent[Any]]] = []
    for own in per_subject.values():
        order = list(own)
        if rng.random() < 0.25:
            for i in range(0, len(order) - 1, 2):
                if rng.random() < 0.5:
                    order[i], order[i + 1] = order[i + 1], order[i]
        keyed = [(float(i), e) for i, e in enumerate(order)]
        keyed += [(rng.uniform(i, len(order)), e) for i, e in enumerate(order)]
        streams.append([e for _, e in sorted(keyed, key=lambda pair: pair[0])])
    merged: list[CloudEvent[Any]] = []
    cursors = [0] * len(streams)
    live = list(range(len(streams)))
    while live:
        pick = rng.choice(live)
        merged.append(streams[pick][cursors[pick]])
        cursors[pick] += 1
        if cursors[pick] == len(streams[pick]):
            live.remove(pick)
    return merged


@pytest.mark.timeout(600)
async def test_every_stream_replayed_twice_and_shuffled_gives_the_same_final_state(
    infra, spaces, service_logs
):
    rng = random.Random(5)
    events = consent_stream(4_000, 300, seed=55, tag="replay")
    subjects = sorted({e.subject for e in events})
    signups = [signed_up(s, f"acc_{s}", BASE - timedelta(days=1)) for s in subjects]
    clean_topics, clean_schema = await spaces()
    distinct = len(events) + len(signups)
    await undisturbed(
        infra,
        clean_topics,
        clean_schema,
        service_logs,
        [(clean_topics.accounts_lifecycle, signups), (clean_topics.consent_changes, events)],
        distinct,
    )
    topics, schema = await spaces()
    shuffled = replayed_and_shuffled(events, rng)
    assert len(shuffled) == 2 * len(events)
    replay_signups = [*signups, *rng.sample(signups, len(signups))]
    await undisturbed(
        infra,
        topics,
        schema,
        service_logs,
        [(topics.consent_changes, shuffled), (topics.accounts_lifecycle, replay_signups)],
        distinct,
    )
    clean_projection = await projection(infra, clean_schema)
    replay_projection = await projection(infra, schema)
    # Versions count applied changes, which depend on arrival order; the state must not.
    strip = {s: doc for s, (_, doc) in clean_projection.items()}
    assert {s: doc for s, (_, doc) in replay_projection.items()} == strip
    # both services stopped cleanly (outbox drained): the topics are complete up to their ends
    clean_last = last_states(await read_all(infra.kafka, clean_topics.consent_state))
    last = last_states(await read_all(infra.kafka, topics.consent_state))
    assert clean_last
    assert {s: _no_version(d) for s, d in last.items()} == {
        s: _no_version(d) for s, d in clean_last.items()
    }
    STATS.notes.append(
        f"replay: {len(shuffled) + len(replay_signups)} deliveries of {distinct} events, same state"
    )


def _no_version(data: Any) -> Any:
    return {k: v for k, v in data.items() if k != "version"} if data else data


@pytest.mark.timeout(300)
async def test_after_erasure_late_events_bring_nothing_back(infra, topics, schema, service_logs):
    rng = random.Random(3)
    subject_events = consent_stream(200, 5, seed=7, tag="resurrect")
    victim = subject_events[0].subject
    service = consent(infra, topics, schema, service_logs, "consent-resurrect")
    async with processes(service):
        service.start()
        await service.wait_ready()
        await send(infra.kafka, topics.consent_changes, subject_events)
        await wait_inbox(infra, schema, len(subject_events))
        assert victim in await projection(infra, schema)
        erased_at = BASE + timedelta(days=30)
        await send(infra.kafka, topics.privacy_requests, [erasure(victim, erased_at, "req_res")])
        await wait_inbox(infra, schema, len(subject_events) + 1)
        late = [
            e.model_copy(update={"subject": victim})
            for e in consent_stream(60, 1, seed=8, tag="late")
        ]
        later = late[40:]
        late = late[:40]
        replay = [e for e in subject_events if e.subject == victim]
        rng.shuffle(replay)
        await send(infra.kafka, topics.consent_changes, [*late, *replay[:20]])
        await send(
            infra.kafka,
            topics.accounts_lifecycle,
            [signed_up(victim, "acc_victim", erased_at + timedelta(days=1))],
        )
        await wait_inbox(infra, schema, len(subject_events) + 1 + len(late) + 1)
        service.kill()  # and a restart must not rebuild it either
        service.start()
        await service.wait_ready()
        await send(infra.kafka, topics.consent_changes, [*later, *late[:5]])
        await wait_inbox(infra, schema, len(subject_events) + 1 + len(late) + 1 + len(later))
        rows = await projection(infra, schema)
        ledger = await query(
            infra.database_url,
            f'SELECT count(*) AS n FROM "{schema}".ledger WHERE subject_id = $1 OR evidence IS NOT NULL AND evidence::text LIKE $2',
            victim,
            f"%{victim}%",
        )
        await outbox_published(infra.database_url, schema)
        states = await read_all(infra.kafka, topics.consent_state)
        await service.terminate()
    resurrected = victim in rows
    STATS.leaked += int(resurrected)
    assert not resurrected
    assert ledger[0]["n"] == 0
    after_tombstone = False
    for r in states:
        if r.key.decode() != victim:
            continue
        if r.value is None:
            after_tombstone = True
        else:
            assert not after_tombstone, "a consent.state for the erased subject after its tombstone"
    assert after_tombstone
    assert len(rows) == len({e.subject for e in subject_events}) - 1


@pytest.mark.timeout(400)
async def test_three_consent_replicas_one_killed_one_added_end_like_an_undisturbed_run(
    infra, spaces, service_logs
):
    events = consent_stream(6_000, 600, seed=31, tag="rebalance")
    clean_topics, clean_schema = await spaces()
    await undisturbed(
        infra,
        clean_topics,
        clean_schema,
        service_logs,
        [(clean_topics.consent_changes, events)],
        len(events),
    )
    topics, schema = await spaces()
    rng = random.Random(13)
    replicas = [consent(infra, topics, schema, service_logs, f"consent-rb{n}") for n in range(4)]
    async with processes(*replicas):
        await rebalance_under_load(
            replicas,
            lambda: send(infra.kafka, topics.consent_changes, events, chunk=200, pace=0.1),
            rng,
        )
        await wait_inbox(infra, schema, len(events))
        for r in (replicas[0], replicas[2], replicas[3]):
            await r.terminate()
            assert r.stopped_cleanly()
    published = await expected_state_count(infra, clean_schema)
    compare_runs(
        await outcome(infra, clean_topics, clean_schema, published),
        await outcome(infra, topics, schema, published),
    )


def lapsing_grants(subjects: int, lapse_at: datetime) -> list[CloudEvent[Any]]:
    """One grant per subject that lapses at `lapse_at` (the expiry loop's work)."""
    run = uuid.uuid4().hex[:6]
    return [
        new_event(
            ConsentGranted,
            subject=f"usr_{run}_lapse_{n}",
            data=ConsentChangeData(
                purpose="personalisation",
                source=ConsentSource.WEB_FORM,
                policy_version="2026-10",
                expires_at=lapse_at,
            ),
            source="web",
            time=lapse_at - timedelta(minutes=5),
        )
        for n in range(subjects)
    ]


@pytest.mark.timeout(300)
async def test_kill_9_consent_expiry_before_its_commit_expires_each_grant_once(
    infra, topics, schema, service_logs
):
    grants = lapsing_grants(240, datetime.now(UTC) + timedelta(seconds=3))
    subjects = {e.subject for e in grants}
    plans = ["expire:2", "expire:1"]  # the second round of the first run, the first of the next
    service = consent(
        infra,
        topics,
        schema,
        service_logs,
        "consent-expire9",
        CONSENT_EXPIRY_BATCH="40",  # several rounds: some commit before a kill, some after
        CONSENT_EXPIRY_INTERVAL_S="0.2",
    )
    async with processes(service):
        for n, plan in enumerate(plans):
            service.start(kill_at=plan)
            if n == 0:
                await send(infra.kafka, topics.consent_changes, grants)
            assert await service.wait_exit(120) == -signal.SIGKILL
        service.start()
        await wait_inbox(infra, schema, len(grants))

        async def all_expired() -> bool:
            rows = await query(
                infra.database_url,
                f'SELECT count(*) AS n FROM "{schema}".subjects WHERE version = 2',
            )
            return int(rows[0]["n"]) >= len(subjects)

        await poll(all_expired, timeout=60, what="every grant expired")
        states = await read_all(
            infra.kafka,
            topics.consent_state,
            until=lambda r: len(copies(r).ids) >= 2 * len(subjects),
            timeout=60,
            settle=2,
        )
        ledger = await query(
            infra.database_url,
            f"SELECT subject_id, count(*) FILTER (WHERE event_type = 'consent.expired') AS expired,"
            f' count(*) AS n FROM "{schema}".ledger GROUP BY 1',
        )
        projection_ = await projection(infra, schema)
        dead = await read_all(infra.kafka, topics.deadletter, until=lambda r: True, timeout=3)
        await service.terminate()
    assert service.stopped_cleanly()
    assert service.planned_kills() == len(plans)
    out = copies(states)
    expiries = Counter(
        r.key.decode()
        for r in {orjson.loads(r.value)["id"]: r for r in states if r.value}.values()
        if orjson.loads(r.value)["data"]["version"] == 2
    )
    twice = {s: n for s, n in expiries.items() if n > 1}
    STATS.doubled += len(twice) + out.conflicts
    STATS.lost += len(subjects - set(expiries))
    assert {r["subject_id"]: (r["expired"], r["n"]) for r in ledger} == dict.fromkeys(
        subjects, (1, 2)
    )
    assert {s: version for s, (version, _) in projection_.items()} == dict.fromkeys(subjects, 2)
    assert twice == {}
    assert set(expiries) == subjects  # each expiry published, under one id
    assert out.unique == 2 * len(subjects)
    assert out.conflicts == 0
    lapsed = {s: d["purposes"]["personalisation"]["state"] for s, d in last_states(states).items()}
    assert lapsed == dict.fromkeys(subjects, "expired")
    assert dead == []
    STATS.notes.append(
        f"consent expiry: {len(subjects)} grants expired once each through {len(plans)} kills; "
        f"{out.extra_copies} re-sent state copies"
    )
