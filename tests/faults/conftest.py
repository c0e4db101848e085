"""Fault-suite fixtures: one folder for every service log of the session, and the summary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from shared.contract.topics import Topics
from tests.faults.harness import delete_topics, drop_schema, private_space
from tests.faults.stats import STATS, TOPICS_USED
from tests.support.infra import ROOT, Infra


@pytest.fixture(scope="session", autouse=True)
def _delete_topics_at_the_end() -> Iterator[None]:
    """The suite's private topics go when it ends (a broker with thousands restarts slowly)."""
    yield
    for bootstrap, names in TOPICS_USED.items():
        with contextlib.suppress(Exception):  # a private broker may be gone already
            asyncio.run(asyncio.wait_for(delete_topics(bootstrap, names), 30))


@pytest.fixture(scope="session")
def service_logs() -> Path:
    """Where every service process of the session writes its log (the log scan reads it).

    Not pytest's tmp_path: other pytest sessions on the machine rotate those folders away.
    """
    folder = ROOT / ".local" / "fault-logs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True)
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures of the fault run (independent of -s and -r), only when every test
    passed: a failed scenario stops counting midway, and its zeros would mean nothing."""
    if not (STATS.events_sent or STATS.malformed_inputs or STATS.processes_killed):
        return
    failed = len(terminalreporter.stats.get("failed", [])) + len(
        terminalreporter.stats.get("error", [])
    )
    terminalreporter.write_sep("=", "fault suite figures")
    if failed:
        terminalreporter.write_line(
            f"withheld: {failed} test(s) failed or errored, so lost / doubled / leaked would "
            "count only what ran before the failures"
        )
        return
    for line in STATS.lines():
        terminalreporter.write_line(line)


@pytest.fixture
async def spaces(infra: Infra) -> AsyncIterator[Callable[[], Awaitable[tuple[Topics, str]]]]:
    """A factory of extra private (topics, schema) pairs; the schemas are dropped afterwards."""
    made: list[str] = []

    async def make() -> tuple[Topics, str]:
        topics, schema = await private_space(infra)
        made.append(schema)
        return topics, schema

    yield make
    for schema in made:
        await drop_schema(infra, schema)
