"""An open-loop HTTP/1.1 load generator, run in its own process: `python -m bench.loadgen`.

Requests are scheduled at a fixed offered rate whatever the server does; latency is measured
from each request's scheduled time to its response (so a stalled server shows up as latency,
not as fewer requests: no coordinated omission). A request that fails (connection error,
non-200 answer) or is still unanswered `--timeout-ms` after its scheduled time counts in the
percentiles as a latency of the timeout. Every step runs `--repeats` times and its median
attempt counts (the same for passing and failing steps). Keep-alive connections (all opened
before the warm-up), one request in flight per connection, plain asyncio streams on uvloop (the
generator must stay cheaper than the server).
Prints one JSON object: a list of steps with offered and achieved rate, errors, timeouts and
latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import uvloop

from bench.stats import highest_sustained, median_attempt, percentile, with_failures


@dataclass
class Step:
    offered: float
    achieved: float
    sent: int
    ok: int
    errors: int
    """Connection errors and non-200 answers (each counted in the percentiles as a timeout)."""
    timeouts: int
    """Requests unanswered `timeout_ms` after their scheduled time (counted as the timeout)."""
    timeout_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    attempts: list[float] = field(default_factory=list)
    """The p99 of every attempt at this rate (each step runs `--repeats` times; this is the
    median attempt)."""
    accepted_p99_ms: float = 0.0
    """p99 of the 200 answers alone (the overload scenario's figure; 0 when there were none)."""
    refused: int = 0
    """503 answers (admission control), also counted in `errors`."""
    refused_p99_ms: float = 0.0
    """p99 latency of the 503 answers, from their scheduled time (how fast a refusal comes)."""


class Connection:
    """One keep-alive connection; `get` sends a request and reads the whole response."""

    def __init__(self, host: str, port: int, headers: bytes) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self.reader, self.writer

    async def get(self, path: str) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await self.connect()
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.headers)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def run_step(
    conns: list[Connection], paths: list[str], offered: float, duration: float, timeout_ms: float
) -> Step:
    """Offer `offered` requests/s for `duration` seconds; latencies from scheduled times, a
    failed or late request counting as `timeout_ms`."""
    clock = time.perf_counter  # not loop.time(): uvloop's is libuv's cached whole milliseconds
    total = max(1, int(offered * duration))
    queue: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
    latencies: list[float] = []
    refusals: list[float] = []
    errors = timeouts = 0
    timeout = timeout_ms / 1000

    async def worker(conn: Connection) -> None:
        nonlocal errors, timeouts
        while (item := await queue.get()) is not None:
            scheduled, path = item
            remaining = scheduled + timeout - clock()
            if remaining <= 0:  # already past its deadline in the queue: the server is behind
                timeouts += 1
                continue
            try:
                async with asyncio.timeout(remaining):  # no task per request, as wait_for makes
                    status = await conn.get(path)
            except TimeoutError:
                timeouts += 1
                await reset(conn)  # its answer may still come: the connection is out of step
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                await reset(conn)
                continue
            if status == 200:
                latencies.append((clock() - scheduled) * 1000)
            else:
                errors += 1
                if status == 503:
                    refusals.append((clock() - scheduled) * 1000)

    workers = [asyncio.create_task(worker(c)) for c in conns]
    start = clock() + 0.01
    sent = 0
    while sent < total:
        due = min(total, max(sent, int((clock() - start) * offered) + 1))
        for i in range(sent, due):
            queue.put_nowait((start + i / offered, paths[i % len(paths)]))
        sent = due
        await asyncio.sleep(0.001)  # libuv timers count whole milliseconds: less would spin
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = clock() - start
    summary = with_failures(latencies, errors + timeouts, timeout_ms)
    return Step(
        offered=offered,
        achieved=len(latencies) / elapsed,
        sent=total,
        ok=len(latencies),
        errors=errors,
        timeouts=timeouts,
        timeout_ms=timeout_ms,
        p50_ms=summary.p50,
        p99_ms=summary.p99,
        max_ms=summary.max,
        accepted_p99_ms=percentile(latencies, 99) if latencies else 0.0,
        refused=len(refusals),
        refused_p99_ms=percentile(refusals, 99) if refusals else 0.0,
    )


async def reset(conn: Connection) -> None:
    """Drop a connection whose request failed; the next request opens a new one."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        await conn.close()
    conn.reader = conn.writer = None


async def repeated(
    conns: list[Connection], paths: list[str], offered: float, args: argparse.Namespace
) -> Step:
    """The step run `args.repeats` times, passing or not: its median attempt, with every
    attempt's p99 (one stall, or one lucky run, does not decide)."""
    tries: list[Step] = []
    for n in range(max(1, args.repeats)):
        if n:
            await asyncio.sleep(0.5)
        tries.append(await run_step(conns, paths, offered, args.duration, args.timeout_ms))
    chosen = tries[median_attempt([(t.offered, t.achieved, t.p99_ms) for t in tries])]
    chosen.attempts = [t.p99_ms for t in tries]
    return chosen


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with open(args.paths_file) as handle:
        paths = [line.strip() for line in handle if line.strip()]
    headers = f"Host: {args.host}\r\n".encode()
    if args.token:
        headers += f"Authorization: Bearer {args.token}\r\n".encode()
    headers += b"\r\n"
    conns = [Connection(args.host, args.port, headers) for _ in range(args.connections)]
    try:
        # Every connection open before any step: a step must not time hundreds of handshakes
        # (the warm-up's rate would use only a few of them).
        await asyncio.gather(*(conn.connect() for conn in conns))
        await run_step(conns, paths, args.warmup_rate, args.warmup, args.timeout_ms)  # unrecorded
        steps: list[Step] = []
        for offered in args.rates:
            step = await repeated(conns, paths, offered, args)
            steps.append(step)
            print(json.dumps(asdict(step)), file=sys.stderr, flush=True)
            if (
                args.stop_on_miss
                and highest_sustained(
                    [(s.offered, s.achieved, s.p99_ms) for s in steps], args.p99_limit
                )
                < offered
            ):
                break
            await asyncio.sleep(0.5)
    finally:
        for conn in conns:
            await conn.close()
    return {"steps": [asdict(s) for s in steps], "finished": time.time()}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--paths-file", required=True, help="one request path per line")
    parser.add_argument("--rates", type=float, nargs="+", required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--warmup-rate", type=float, default=500.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--stop-on-miss", action="store_true")
    parser.add_argument("--p99-limit", type=float, default=10.0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="every step runs this many times and its median attempt counts",
    )
    parser.add_argument(
        "--timeout-ms",
        type=float,
        default=1000.0,
        help="a request unanswered this long after its scheduled time is a timeout; failed and "
        "timed-out requests count in the percentiles as this latency",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    # uvloop, as the services run under: the generator must stay cheaper than the server it
    # loads on the same cores (asyncio's own loop took ~30% more CPU per request here)
    result = uvloop.run(main_async(parse(sys.argv[1:] if argv is None else argv)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
