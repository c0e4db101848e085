"""Supervision of background tasks: one that fails or ends early is logged, counted and
started again, with a growing delay while it keeps failing quickly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from shared.plumbing import metrics

log = structlog.get_logger(__name__)


async def supervise(
    service: str,
    task: str,
    run: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> None:
    """Run a background loop until `stop` is set. A loop that fails, or returns before
    `stop`, is logged, counted (`pp_background_restarts_total`) and started again: after
    `first_delay` seconds, doubling up to `max_delay` while it keeps failing quickly.

    The loops catch what they expect themselves; this is for what nobody expected, since a
    loop that silently ended (the relay, the timers) breaks a promise with no error visible.
    """
    delay = first_delay
    while not stop.is_set():
        started = time.monotonic()
        try:
            await run()
        except Exception as exc:
            log.error(
                "background_task_failed",
                service=service,
                task=task,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
        else:
            if stop.is_set():
                return
            log.error("background_task_ended", service=service, task=task)
        metrics.BACKGROUND_RESTARTS.labels(service, task).inc()
        if time.monotonic() - started > max_delay:
            delay = first_delay  # it ran a good while: a new failure, not a failing loop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_delay)
