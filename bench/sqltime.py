"""Diagnostics (BENCH_SQLTIME=1): run uvicorn with every asyncpg statement timed.

`python -m bench.sqltime <uvicorn arguments>`; at exit, writes {statement: [calls, seconds]} to
$BENCH_SQLTIME_OUT. Wall time per statement as the service awaits it (queueing included), which
is what a batch waits for. Off by default: the wrapper itself costs a little per statement.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

STATS: dict[str, list[float]] = {}
TIMED = ("execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_records_to_table")


def _key(method: str, args: tuple[Any, ...]) -> str:
    text = " ".join(str(args[0]).split())[:100] if args else ""
    return f"{method}: {text}"


def _timed(method: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            entry = STATS.setdefault(_key(method, args), [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    return timed


def install() -> None:
    """Wrap asyncpg's Connection methods (pool proxies call through to them)."""
    for method in TIMED:
        original = getattr(asyncpg.connection.Connection, method)
        setattr(asyncpg.connection.Connection, method, _timed(method, original))


def dump() -> None:
    out = os.environ.get("BENCH_SQLTIME_OUT")
    if out:
        Path(out).write_text(json.dumps(STATS))


def summary(stats: dict[str, list[float]], limit: int = 12) -> list[tuple[str, int, float]]:
    """(statement, calls, seconds), the costliest first."""
    ranked = sorted(stats.items(), key=lambda item: item[1][1], reverse=True)[:limit]
    return [(statement, int(calls), seconds) for statement, (calls, seconds) in ranked]


def render(name: str, rows: Sequence[tuple[str, int, float]]) -> str:
    lines = [
        f"### SQL time: {name}",
        "",
        "| seconds | calls | ms/call | statement |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s:.2f} | {c:,} | {s / c * 1000:.2f} | `{text.replace('|', '/')}` |"
        for text, c, s in rows
        if c
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    import uvicorn.main

    install()
    atexit.register(dump)
    # uvicorn restores the handlers it found and re-raises SIGTERM after a graceful shutdown:
    # with this one installed first, that ends in a normal exit (and atexit runs).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.main.main()


if __name__ == "__main__":
    main()
