"""Periodic background loops: one helper, so no loop needs a catch-all of its own.

A loop is a `round` run again and again. A round that fails is retried with back-off (an
outage quietly, anything else loudly); an item that fails inside a round is isolated with
`Items.isolate`: held back with a doubling delay and reported, while the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.plumbing import metrics
from shared.plumbing.db import Conn, is_database_failure, is_transient
from shared.plumbing.logging import get_logger

log = get_logger(__name__)

C = TypeVar("C")
T = TypeVar("T")

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
ITEM_MAX_DELAY = 300.0


@dataclass
class Attempt:
    """How one isolated item went: `failed` once its work raised (and it was held back)."""

    failed: bool = False


class Items:
    """The failing items of one loop, each held back until its retry time.

    A round asks `held()` for the keys to leave out of its claim and wraps each item's work
    in `isolate(key)` (inside it, a savepoint: `async with items.isolate(k), conn.transaction()`).
    """

    def __init__(
        self,
        service: str,
        loop: str,
        *,
        first_delay: float = FIRST_DELAY,
        max_delay: float = ITEM_MAX_DELAY,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.loop = loop
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._now = now
        self._failing: dict[str, tuple[float, float]] = {}  # key -> (retry at, current delay)

    def held(self) -> list[str]:
        """Keys still waiting for their retry time."""
        now = self._now()
        return [key for key, (retry_at, _) in self._failing.items() if retry_at > now]

    @contextlib.asynccontextmanager
    async def isolate(self, key: str) -> AsyncIterator[Attempt]:
        """Run one item's work; a failure of the item (not an outage) is held back and reported."""
        attempt = Attempt()
        try:
            yield attempt
        except Exception as exc:
            if is_transient(exc):
                raise  # an outage stops the round; the loop retries it as a whole
            attempt.failed = True
            self._failed(key, exc)
        else:
            if self._failing.pop(key, None) is not None:
                log.info("background_item_recovered", service=self.service, loop=self.loop)

    async def each(
        self,
        conn: Conn,
        batch: Sequence[T],
        key: Callable[[T], str],
        work: Callable[[Sequence[T]], Awaitable[None]],
    ) -> list[T]:
        """`work(batch)` under a savepoint; if the input breaks it, `work([item])` for each item
        under its own savepoint, holding back the ones that fail. Returns those (the caller
        undoes their claim in its transaction). `work` must keep its effects only on success."""
        try:
            async with conn.transaction():
                await work(batch)
        except Exception as exc:
            if is_transient(exc):
                raise
        else:
            return []
        failed = []
        for item in batch:
            async with self.isolate(key(item)) as attempt, conn.transaction():
                await work([item])
            if attempt.failed:
                failed.append(item)
        return failed

    def _failed(self, key: str, exc: Exception) -> None:
        _, previous = self._failing.get(key, (0.0, 0.0))
        delay = min(previous * 2, self.max_delay) if previous else self.first_delay
        self._failing[key] = (self._now() + delay, delay)
        metrics.BACKGROUND_FAILURES.labels(self.service, self.loop, "item").inc()
        log.error(
            "background_item_failed",
            service=self.service,
            loop=self.loop,
            item=key,
            retry_in_s=delay,
            error=f"{type(exc).__name__}: {exc}"[:300],
        )


@dataclass(frozen=True)
class Loop(Generic[C]):
    """A periodic background loop of a service.

    `round(ctx, items)` does one round of work and returns True when more is waiting (the next
    round then starts at once); otherwise the loop sleeps `idle(ctx)` seconds.
    """

    name: str
    round: Callable[[C, Items], Awaitable[bool]]
    idle: Callable[[C], float]


async def run_loop(loop: Loop[C], ctx: C, service: str, stop: asyncio.Event) -> None:
    """Run `loop` until `stop` is set; a failed round is retried after a doubling delay."""
    items = Items(service, loop.name)
    delay = FIRST_DELAY
    while not stop.is_set():
        try:
            more = await loop.round(ctx, items)
        except Exception as exc:
            _report_round(service, loop.name, exc)
            wait, delay = delay, min(delay * 2, MAX_DELAY)
        else:
            wait, delay = (0.0 if more else loop.idle(ctx)), FIRST_DELAY
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        else:
            await asyncio.sleep(0)  # let others run between busy rounds


def _report_round(service: str, loop: str, exc: Exception) -> None:
    metrics.BACKGROUND_FAILURES.labels(service, loop, "round").inc()
    error = f"{type(exc).__name__}: {exc}"[:300]
    if is_database_failure(exc):  # an outage: quiet, it retries until the database is back
        log.warning("background_round_retry", service=service, loop=loop, error=error)
    else:
        log.error("background_round_failed", service=service, loop=loop, error=error)
