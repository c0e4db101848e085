"""A private three-broker Kafka cluster (deploy/local/up --brokers 3) whose brokers die by -9.

Its own state folder and ports; small heaps (three JVMs share the machine with the suite).
A broker is killed by the pid of its pid file and brought back by `up --brokers 3`, which
starts whichever nodes do not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from tests.faults.harness import _deploy
from tests.faults.stats import STATS, TOPICS_USED
from tests.support.infra import ROOT

NODES = (1, 2, 3)
POLICY = TopicPolicy(partitions=3, replication=3, min_insync_replicas=2)
"""The service topics on the cluster: one broker may die without stopping acks=all writes."""


def free_port_run(count: int) -> int:
    """The first of `count` consecutive free ports (the cluster's nodes take 2 each), below
    the ephemeral range: a killed broker's port must not go to some client's connection."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(max(1024, low - 12000), low - count)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


@dataclass
class Cluster:
    """A running three-node cluster of this test module."""

    state: Path
    env: dict[str, str]
    bootstrap: str

    def pid(self, node: int) -> int | None:
        """The pid of node `node` (1..3), or None when it is down."""
        path = self.state / "cluster" / f"kafka-{node}" / "kafka.pid"
        with contextlib.suppress(OSError, ValueError):  # no pid file, or the process is gone
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                return pid
        return None

    def kill(self, node: int) -> None:
        """SIGKILL node `node` and wait until it is gone."""
        pid = self.pid(node)
        assert pid is not None, f"broker {node} is not running"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while self.pid(node) is not None:
            assert time.monotonic() < deadline, f"broker {node} (pid {pid}) outlived SIGKILL"
            time.sleep(0.05)
        STATS.processes_killed += 1

    async def start_missing(self) -> None:
        """Start every node that does not run; returns when they all say they started."""
        await _deploy("up", "--brokers", "3", "kafka", env=self.env)

    async def create_topics(self, topics: Topics) -> None:
        await ensure_topics(self.bootstrap, topics, POLICY)
        TOPICS_USED.setdefault(self.bootstrap, set()).update(topics.all())

    async def leaders(self, topics: Collection[str], within: float = 30) -> Counter[int]:
        """How many partitions of `topics` each live broker leads (asked again while the
        admin client happens to pick a dead broker)."""
        deadline = time.monotonic() + within
        while True:
            try:
                described = await self._describe(topics)
                break
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        live = {node for node in NODES if self.pid(node) is not None}
        return Counter(
            p["leader"] for t in described for p in t["partitions"] if p["leader"] in live
        )

    async def _describe(self, topics: Collection[str]) -> list[Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return list(await admin.describe_topics(list(topics)))
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def three_brokers(heap: str = "384m") -> AsyncIterator[Cluster]:
    """Start the cluster; ALWAYS stop and purge it afterwards."""
    base = free_port_run(6)
    state = ROOT / ".local" / f"fault-cluster-{os.getpid()}-{base}"
    env = {
        **os.environ,
        "PP_LOCAL_DIR": str(state),
        "PP_CLUSTER_BASE_PORT": str(base),
        "PP_KAFKA_HEAP": heap,
    }
    bootstrap = ",".join(f"127.0.0.1:{base + 2 * (n - 1)}" for n in NODES)
    try:
        await _deploy("up", "--brokers", "3", env=env)
        written = (state / "cluster" / "env").read_text()
        assert f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}" in written, written
        yield Cluster(state, env, bootstrap)
    finally:
        await _deploy("down", "--brokers", "3", "--purge", env=env)
        shutil.rmtree(state, ignore_errors=True)
        TOPICS_USED.pop(bootstrap, None)  # gone with the cluster
