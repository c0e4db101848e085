"""The consent service through PostgreSQL crashes: the postmaster killed with -9, and
`pg_ctl stop -m immediate`, again and again while consent changes flow.

On the private PostgreSQL (and Kafka) of deploy/local that the outage tests use, so nothing
else on the machine stalls. After a kill -9 the orphaned backends must exit before the server
may start again (PostgreSQL refuses while they hold its shared memory). Judged from Kafka read
from offset 0 and from the database: nothing lost, doubled or dead-lettered; the relay's
outbox deletes are committed with synchronous_commit=off, so a crash may only make it send a
row again (identical copies, counted apart).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.harness import (
    PrivateInfra,
    _deploy,
    private_infra,
    private_space,
    processes,
    send,
)
from tests.faults.judge import judge_consent
from tests.faults.stats import STATS, Scenario
from tests.faults.test_consent_faults import consent
from tests.faults.workloads import consent_stream

pytestmark = pytest.mark.faults

CRASHES = ["postmaster kill -9", "pg_ctl -m immediate", "postmaster kill -9", "pg_ctl -m immediate"]


@pytest.fixture(scope="module")
async def private() -> AsyncIterator[PrivateInfra]:
    async with private_infra() as running:
        yield running


def data_dir(private: PrivateInfra) -> Path:
    return Path(private.env["PP_LOCAL_DIR"]) / "pg" / "data"


def pg_bin() -> Path:
    """The machine's newest PostgreSQL bin folder (as deploy/local/lib.sh picks it)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    assert found, "no PostgreSQL under /usr/lib/postgresql"
    return found[-1]


def users_of(data: Path) -> list[int]:
    """Processes whose working folder is the data folder: the postmaster and its backends."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "cwd") == str(data):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def crash(private: PrivateInfra, kind: str) -> None:
    """Crash the server as `kind` says (no shutdown checkpoint either way)."""
    data = data_dir(private)
    if kind == "postmaster kill -9":
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        STATS.processes_killed += 1
        return
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*as_owner, str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
        check=True,
        capture_output=True,
        timeout=60,
    )


async def wait_orphans_gone(private: PrivateInfra, timeout: float = 60) -> None:
    """Until no process uses the data folder (backends notice their postmaster died)."""
    deadline = time.monotonic() + timeout
    while left := users_of(data_dir(private)):
        assert time.monotonic() < deadline, f"backends {left} outlived their postmaster"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(400)
async def test_postgres_crashes_mid_stream_lose_nothing_double_nothing_dead_letter_nothing(
    private: PrivateInfra, service_logs: Path
) -> None:
    figures = Scenario("postgres crashes (postmaster kill -9, pg_ctl -m immediate)")
    infra = private.infra
    topics, schema = await private_space(infra)
    events = consent_stream(3000, 150, seed=5, tag="pgcrash")
    service = consent(
        infra, topics, schema, service_logs, f"consent-pgcrash-{uuid.uuid4().hex[:4]}"
    )
    rng = random.Random(20261206)
    try:
        async with processes(service):
            service.start()
            await service.wait_ready()
            loading = asyncio.create_task(
                send(infra.kafka, topics.consent_changes, events, pace=0.5, chunk=100)
            )
            for kind in CRASHES:
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                crash(private, kind)
                figures.fault(kind)
                await wait_orphans_gone(private)
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                await _deploy("up", "postgres", env=private.env)  # crash recovery
            figures.sent(await loading)
            await service.wait_ready(timeout=120)
            await judge_consent(infra, topics, schema, events, figures)
            await service.terminate()
            assert service.stopped_cleanly()
    finally:
        figures.report()  # (the private database goes with its fixture)
