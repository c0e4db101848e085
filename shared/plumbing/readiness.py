"""Readiness, checked in the background at most once a second and answered from memory.

The open `/readyz` says only ok / not ok per dependency (it is unauthenticated and may be
polled hard); the reasons go to the log when a check changes and to the authenticated
`/v1/ops/readiness`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from shared.plumbing import db
from shared.plumbing.logging import get_logger

log = get_logger(__name__)

EVERY = 1.0
"""Seconds between two rounds of checks: the most often a dependency is asked."""
CHECKS = ("database", "migrations", "broker")


@dataclass
class Readiness:
    """The latest answer of each check: None while fine, else why not (for the log and ops)."""

    problems: dict[str, str | None] = field(
        default_factory=lambda: dict.fromkeys(CHECKS, "not checked yet")
    )

    @property
    def ready(self) -> bool:
        """Every check passed in the latest round."""
        return not any(self.problems.values())

    def public(self) -> dict[str, str]:
        """What the open endpoint may say: ok / not ok per dependency, nothing more."""
        return {
            name: "ok" if problem is None else "not ok" for name, problem in self.problems.items()
        }

    def set(self, name: str, problem: str | None) -> None:
        """Record a check's outcome; a change is logged with its reason."""
        if self.problems.get(name) != problem:
            if problem is None:
                log.info("readiness_ok", check=name)
            else:
                log.warning("readiness_failed", check=name, reason=problem)
        self.problems[name] = problem


async def check(
    readiness: Readiness,
    pool: asyncpg.Pool,
    migrations: Path,
    broker_ping: Callable[[float], Awaitable[bool]],
    leaders: Callable[[], Awaitable[list[str]]] | None = None,
) -> None:
    """One round of checks: the database (and the migrations it has), then the broker.

    `leaders` names the partitions of the service's topics whose leader is unreachable: a
    broker that lost its controller quorum still answers a ping (see `kafka.unreachable_leaders`).
    """
    try:
        async with pool.acquire(timeout=2) as conn:
            pending = await db.pending_migrations(conn, migrations)
        readiness.set("database", None)
        readiness.set("migrations", f"pending: {', '.join(pending)}" if pending else None)
    except Exception as exc:  # whatever it is, the database cannot serve us now
        readiness.set("database", f"unreachable: {type(exc).__name__}: {exc}"[:300])
        readiness.set("migrations", "unknown: the database is unreachable")
    reachable = await broker_ping(2.0)
    problem = None if reachable else "unreachable (no metadata within 2 s)"
    if reachable and leaders is not None:
        try:
            missing = await asyncio.wait_for(leaders(), 2.0)
        except Exception as exc:  # no broker answers the metadata request in time
            missing = [f"no partition metadata: {type(exc).__name__}"]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            problem = f"partition leaders unreachable: {shown}"
    readiness.set("broker", problem)
