"""A consent client paused past the tombstone retention still drops an erased subject.

The client (its own process) caught up on a private compacted topic with tiny segment and
tombstone retention; it is paused (SIGSTOP) while a subject's tombstone is written and then
compacted away together with the subject's state. Resumed, it fetches on from where it was and
never sees that tombstone: only a reload from the beginning drops the subject.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.contract.codec import encode
from tests.faults.harness import poll, read_all, send
from tests.faults.stats import TOPICS_USED, Scenario
from tests.support import events as make
from tests.support.infra import ROOT, Infra

pytestmark = pytest.mark.faults

AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
RETENTION_S = 6.0
"""What the client is told the tombstone retention is (it reloads after half of it)."""
TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "segment.ms": "100",  # each filler record below starts a new segment: cleanable at once
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
}


def state(subject: str, version: int) -> tuple[bytes | None, bytes | None]:
    return encode(make.consent_state(subject, version, at=AT, marketing_email=True))


async def create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=TOPIC_CONFIGS)])
    finally:
        await admin.close()
    TOPICS_USED.setdefault(bootstrap, set()).add(name)


def start_probe(log: Path, bootstrap: str, topic: str, out: Path, *subjects: str) -> Any:
    """The probe process (tests/faults/consent_client_probe.py), its output going to `log`."""
    args = [bootstrap, topic, str(RETENTION_S), str(out), *subjects]
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.faults.consent_client_probe", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def report(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {"known": [], "reloads": -1}
    return data


@pytest.mark.timeout(300)
async def test_a_client_paused_past_the_tombstone_retention_reloads_and_drops_the_erased(
    infra: Infra, service_logs: Path
) -> None:
    figures = Scenario("consent client paused past the tombstone retention")
    run = uuid.uuid4().hex[:8]
    topic, erased, kept = f"fgap{run}.consent.state", f"usr_gone_{run}", f"usr_kept_{run}"
    await create_topic(infra.kafka, topic)
    figures.sent(await send(infra.kafka, topic, [state(erased, 1), state(kept, 1)]))
    out = service_logs / f"client-probe-{run}.json"
    probe = start_probe(
        service_logs / f"client-probe-{run}.log", infra.kafka, topic, out, erased, kept
    )
    try:
        await poll(
            lambda: asyncio.sleep(0, set(report(out)["known"]) == {erased, kept}),
            timeout=60,
            what="the probe caught up with both subjects",
        )
        probe.send_signal(signal.SIGSTOP)
        figures.fault("consent client paused (SIGSTOP)")
        await asyncio.sleep(1.5)  # its last long-poll fetch has been answered (empty)
        figures.sent(await send(infra.kafka, topic, [(erased.encode(), None)]))
        paused = time.monotonic()
        version = 1
        while True:  # filler rolls segments so the cleaner runs twice: state, then tombstone
            version += 1
            figures.sent(await send(infra.kafka, topic, [state(f"usr_fill_{run}", version)]))
            records = await read_all(infra.kafka, topic, until=lambda r: True, settle=0.3)
            if erased.encode() not in {r.key for r in records}:
                break
            assert time.monotonic() - paused < 200, "the cleaner never removed the tombstone"
            await asyncio.sleep(0.5)
        print(f"tombstone compacted away {time.monotonic() - paused:.0f} s after the pause")
        probe.send_signal(signal.SIGCONT)
        await poll(
            lambda: asyncio.sleep(0, report(out)["known"] == [kept]),
            timeout=30,
            what=f"the resumed client to drop {erased} (it still knows {report(out)['known']})",
        )
        assert report(out)["reloads"] >= 1
        figures.judged(lost=0, doubled=0, stale=0)
    finally:
        probe.send_signal(signal.SIGCONT)
        probe.kill()
        probe.wait(10)
        figures.report()
