"""A cluster seen from a service: readiness names unreachable partition leaders (a lost
controller quorum), and a bootstrap list with several brokers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from shared.plumbing import readiness


class NoDatabase:
    """A pool whose connections never come (the broker check runs all the same)."""

    @contextlib.asynccontextmanager
    async def acquire(self, timeout: float) -> AsyncIterator[Any]:
        raise OSError("no database in a unit test")
        yield


async def broker_problem(ping: bool, leaders: Any) -> str | None:
    state = readiness.Readiness()

    async def broker_ping(_: float) -> bool:
        return ping

    pool: Any = NoDatabase()
    await readiness.check(state, pool, Path("."), broker_ping, leaders)
    return state.problems["broker"]


async def test_partitions_without_a_reachable_leader_make_the_broker_not_ready() -> None:
    async def leaders() -> list[str]:
        return [f"consent.changes/{n}" for n in range(7)]

    problem = await broker_problem(True, leaders)
    assert problem is not None
    assert problem.startswith("partition leaders unreachable: consent.changes/0")
    assert problem.endswith(", ...")


async def test_no_metadata_at_all_is_not_ready_either() -> None:
    async def leaders() -> list[str]:
        raise TimeoutError

    assert await broker_problem(True, leaders) == (
        "partition leaders unreachable: no partition metadata: TimeoutError"
    )


async def test_every_leader_reachable_is_ready_and_an_unanswered_ping_skips_the_leaders() -> None:
    asked: list[str] = []

    async def leaders() -> list[str]:
        asked.append("asked")
        return []

    assert await broker_problem(True, leaders) is None
    assert await broker_problem(False, leaders) == "unreachable (no metadata within 2 s)"
    assert asked == ["asked"]


def test_a_cluster_bootstrap_string_becomes_one_address_each() -> None:
    from shared.plumbing.kafka import bootstrap_list

    assert bootstrap_list("a:1, b:2,c:3,") == ["a:1", "b:2", "c:3"]
    assert bootstrap_list("kafka:9092") == ["kafka:9092"]
