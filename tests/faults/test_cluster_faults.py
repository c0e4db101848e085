"""The consent service on a three-broker cluster (RF 3, min ISR 2) whose brokers die by -9.

The cluster (deploy/local/up --brokers 3, its own state and ports) runs for this module only.
First the broker leading most partitions of the service's input and output is killed while
consent changes flow: the other two take over, nothing may be lost. Then a second broker dies
while the first is still down: the controller quorum is lost, the service must wait (readiness
red, alive, nothing dead-lettered) and go on when both return. Judged from Kafka read from
offset 0 and from the database, against the versions the events imply.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.contract.topics import Topics
from tests.faults.cluster import Cluster, three_brokers
from tests.faults.harness import drop_schema, processes, send
from tests.faults.judge import judge_consent
from tests.faults.stats import Scenario
from tests.faults.test_consent_faults import consent
from tests.faults.workloads import consent_stream
from tests.support.infra import Infra

pytestmark = pytest.mark.faults

EVENTS = 4000
SUBJECTS = 200


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with three_brokers() as running:
        yield running


async def busiest(cluster: Cluster, topics: Topics) -> int:
    """The live broker leading most partitions of the consent service's input and output."""
    leads = await cluster.leaders([topics.consent_changes, topics.consent_state])
    return max(sorted(leads), key=lambda node: leads[node])


@pytest.mark.timeout(420)
async def test_busiest_leader_then_a_second_broker_killed_mid_stream_nothing_lost(
    cluster: Cluster, infra: Infra, service_logs: Path
) -> None:
    figures = Scenario("cluster: kill -9 of the busiest leader, then of a second (quorum lost)")
    tid = uuid.uuid4().hex[:10]
    topics, schema = Topics().with_prefix(f"c{tid}."), f"f_{tid}"
    on_cluster = Infra(cluster.bootstrap, infra.database_url, "cluster")
    await cluster.create_topics(topics)
    events = consent_stream(EVENTS, SUBJECTS, seed=3, tag="cluster")
    first_half, second_half = events[: EVENTS // 2], events[EVENTS // 2 :]
    service = consent(on_cluster, topics, schema, service_logs, "consent-cluster")
    try:
        async with processes(service):
            service.start()
            await service.wait_ready()
            loading = asyncio.create_task(
                send(cluster.bootstrap, topics.consent_changes, first_half, pace=0.15, chunk=100)
            )
            await asyncio.sleep(1.5)  # batches in flight, outbox rows on their way
            first = await busiest(cluster, topics)
            cluster.kill(first)
            figures.fault("broker kill -9 (busiest leader)")
            figures.sent(await loading)  # the two others took over its partitions
            await service.wait_ready(timeout=90)

            figures.sent(await send(cluster.bootstrap, topics.consent_changes, second_half))
            second = await busiest(cluster, topics)
            cluster.kill(second)  # with the first still down: no quorum, no ISR of 2
            figures.fault("broker kill -9 (second, quorum lost)")
            await service.wait_status(503, timeout=60)
            await asyncio.sleep(10)  # it waits: alive, not ready
            assert service.alive, service.tail()
            assert await service.readyz() == 503

            await cluster.start_missing()
            await service.wait_ready(timeout=120)
            await judge_consent(on_cluster, topics, schema, events, figures)
            await service.terminate()
            assert service.stopped_cleanly()
    finally:
        figures.report()
        await drop_schema(infra, schema)
