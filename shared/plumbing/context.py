"""The one object a service's handlers, loops and API share, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.settings import ServiceSettings


@dataclass(kw_only=True)
class ServiceContext:
    """Settings, the clock and (once the runtime has started) the connection pool.

    Each service's `context.py` subclasses it as `Context` with what else it shares (rules,
    catalogue, keys, storage); the runtime opens it after migrating and closes it last.
    """

    settings: ServiceSettings
    clock: Clock = field(default_factory=SystemClock)
    _pool: asyncpg.Pool | None = field(default=None, init=False, repr=False)

    @property
    def pool(self) -> asyncpg.Pool:
        """The service's connection pool (after the runtime started)."""
        assert self._pool is not None, "service not started"
        return self._pool

    def now(self) -> datetime:
        """The service's current time (a ManualClock in tests)."""
        return self.clock.now()

    async def open(self, pool: asyncpg.Pool) -> None:
        """Take the runtime's pool; a service opens its own resources here too."""
        self._pool = pool

    async def close(self) -> None:
        """Release what `open` took (the runtime closes the pool itself)."""
        self._pool = None
