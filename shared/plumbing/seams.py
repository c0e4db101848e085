"""Test seams: optional hooks at points of the services' work where the fault suite kills them.

Each point is a module attribute `None` in production (then `reach` does nothing); the fault
suite's `tests/faults/chaos_app.py` sets it to kill the process there. No seam may change what
the service does when it is unset.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Seam = Callable[[], Awaitable[None]]
"""A hook awaited at one point of the work (the fault suite's SIGKILL)."""

SyncSeam = Callable[[], None]
"""A hook called at one point of work that runs in a worker thread."""


async def reach(seam: Seam | None) -> None:
    """Await `seam` when a test set it; nothing otherwise."""
    if seam is not None:
        await seam()


def reach_sync(seam: SyncSeam | None) -> None:
    """Call `seam` when a test set it; nothing otherwise (for code in worker threads)."""
    if seam is not None:
        seam()
