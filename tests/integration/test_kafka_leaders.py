"""`unreachable_leaders` on the real broker: none while it runs (the fault suite kills brokers)."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.contract.topics import Topics
from shared.plumbing.kafka import unreachable_leaders
from tests.support.infra import Infra

pytestmark = pytest.mark.integration


async def test_every_partition_of_live_topics_has_a_reachable_leader(
    infra: Infra, topics: Topics
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        assert await unreachable_leaders(admin, topics.all()) == []
    finally:
        await admin.close()
