"""What every scenario uses: infrastructure, private topics and schemas, service processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench.profile import Entry, Profiler
from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
API_TOKEN = "bench-token-0123456"  # noqa: S105  # a throwaway token for processes this run starts


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kb(pid: int, field_name: str) -> int | None:
    """A `/proc/<pid>/status` memory field (VmRSS, VmHWM) in kB; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def mb(kb: int | None) -> float | None:
    return kb / 1024 if kb is not None else None


@dataclass
class Child:
    """A process this run started (a service or a baseline), with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float | None:
        return mb(status_kb(self.pid, "VmRSS"))

    def peak_mb(self) -> float | None:
        return mb(status_kb(self.pid, "VmHWM"))

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def wait_ready(self, path: str = "/readyz", within: float = 90.0) -> None:
        """Poll the HTTP `path` until 200; fail with the log's tail if the process dies."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=3.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"http://127.0.0.1:{self.port}{path}")
                    if response.status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {within}s:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (graceful: finish the batch, drain the outbox), SIGKILL if it hangs."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Phase:
    """What `Bench.profiled` learnt about a block: the child's CPU share (1.0 = one core)."""

    cpu_share: float | None = None

    def note(self, who: str) -> str:
        return f"{who} CPU {self.cpu_share:.0%} of a core" if self.cpu_share is not None else ""


@dataclass
class Bench:
    """One benchmark run: its infrastructure, its private names, what it must clean up."""

    kafka: str
    database_url: str
    scale: float
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    profile: bool = False
    children: list[Child] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    topic_names: list[str] = field(default_factory=list)
    profiles: dict[str, list[Entry]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def profiled(self, child: Child | None, label: str) -> Iterator[Phase]:
        """Measure `child`'s CPU share during the block; with BENCH_PROFILE=1 also py-spy it."""
        phase = Phase()
        if child is None:
            yield phase
            return
        profiler = None
        if self.profile:
            profiler = Profiler(child.pid, RESULTS / "profiles" / f"{self.run_id}-{label}.txt")
        cpu0, wall0 = child.cpu_seconds(), time.monotonic()
        try:
            yield phase
        finally:
            cpu1, wall = child.cpu_seconds(), time.monotonic() - wall0
            if cpu0 is not None and cpu1 is not None and wall > 0:
                phase.cpu_share = (cpu1 - cpu0) / wall
            if profiler is not None:
                self.profiles[label] = profiler.stop()

    def size(self, full: int, minimum: int = 1) -> int:
        """A workload size scaled by BENCH_SCALE."""
        return max(minimum, int(full * self.scale))

    def schema(self, name: str) -> str:
        """A private database schema name for this run (dropped at the end)."""
        schema = f"bench_{self.run_id}_{name}"
        self.schemas.append(schema)
        return schema

    async def topics(self, name: str, partitions: int = 6) -> Topics:
        """A private, freshly created set of contract topics (deleted at the end)."""
        own = Topics().with_prefix(f"bench{self.run_id}.{name}.")
        await ensure_topics(self.kafka, own, TopicPolicy(partitions=partitions))
        self.topic_names.extend(own.all())
        return own

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)

    async def warm_wal(self) -> int:
        """Write about max_wal_size of WAL in a throwaway table, then CHECKPOINT; returns the
        WAL segments written. A fresh cluster (`make bench` starts one) creates and zero-fills
        each new segment, where a server that has been running recycles old ones: on a fresh
        stack the first ingest runs were 5-25% slower, the PostgreSQL-bound baseline most."""
        conn = await self.connect()
        try:
            size = await conn.fetchval("SELECT pg_size_bytes(current_setting('max_wal_size'))")
            rows = max(1, size // 1100)  # ~1.1 KB of WAL per row below
            start = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            table = f"bench_{self.run_id}_warm"
            await conn.execute(f'CREATE TABLE "{table}" (id int, pad text)')
            try:
                await conn.execute(
                    f'INSERT INTO "{table}" SELECT g, repeat(md5(g::text), 30) '
                    "FROM generate_series(1, $1) AS g",
                    rows,
                )
            finally:
                await conn.execute(f'DROP TABLE "{table}"')
            written = await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", start
            )
            await self.checkpoint(conn)
            return int(written // (16 * 1024 * 1024))
        finally:
            await conn.close()

    async def checkpoint(self, conn: asyncpg.Connection | None = None) -> bool:
        """CHECKPOINT before a timed phase, so that each starts with no WAL pending: PostgreSQL
        checkpoints every few hundred MB of WAL (the ingest phases write that much), and a
        phase that began halfway to one would pay for its predecessor's writes. False where
        the role may not (CHECKPOINT needs a superuser or pg_checkpoint)."""
        own = conn is None
        conn = conn or await self.connect()
        try:
            await conn.execute("CHECKPOINT")
            return True
        except asyncpg.InsufficientPrivilegeError:
            return False
        finally:
            if own:
                await conn.close()

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        """Start `python <argv>` in its own process, output to `bench/results/logs/`."""
        logs = RESULTS / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{self.run_id}-{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def service(self, name: str, target: str, env: dict[str, str]) -> Child:
        """A service (or ASGI baseline) under uvicorn, one process, as it would be deployed."""
        port = free_port()
        runner = "shared.plumbing.serve"  # as deployed: uvicorn with admission's protocol
        if os.environ.get("BENCH_SQLTIME", "") not in ("", "0"):
            runner = "bench.sqltime"
            out = RESULTS / "profiles" / f"{self.run_id}-{name}-sql.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            env = {**env, "BENCH_SQLTIME_OUT": str(out)}
        argv = ["-m", runner, target, "--host", "127.0.0.1"]
        if runner == "bench.sqltime":  # plain uvicorn's arguments
            argv[2:2] = ["--factory", "--http", "shared.plumbing.admission:HttpToolsProtocol"]
        argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        child = self.spawn(name, argv, env)
        child.port = port
        return child

    def service_env(self, prefix: str, schema: str, topics: Topics, **extra: str) -> dict[str, str]:
        """Environment for a service: private schema, group and topics; logs at WARNING."""
        env = {
            f"{prefix}KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            f"{prefix}DATABASE_URL": self.database_url,
            f"{prefix}API_TOKEN": API_TOKEN,
            f"{prefix}DB_SCHEMA": schema,
            f"{prefix}GROUP_ID": f"bench-{schema}",
            f"{prefix}TOPICS": topics.model_dump_json(),
            f"{prefix}LOG_LEVEL": "WARNING",
            # a private schema each run: the service migrates it (production: `privacy-plane
            # migrate` as the owner role beforehand)
            f"{prefix}MIGRATE_ON_START": "true",
        }
        env.update({f"{prefix}{key.upper()}": value for key, value in extra.items()})
        return env

    def stop_children(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    async def cleanup(self) -> None:
        """Stop every process, drop every schema, delete every topic and file of this run."""
        self.stop_children()
        shutil.rmtree(RESULTS / "work" / self.run_id, ignore_errors=True)
        if self.schemas:
            conn = await self.connect()
            try:
                for schema in self.schemas:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
        if self.topic_names:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka)
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                doomed = [t for t in self.topic_names if t in existing]
                if doomed:
                    await admin.delete_topics(doomed)
            finally:
                await admin.close()


@contextlib.asynccontextmanager
async def producer(kafka: str) -> AsyncIterator[AIOKafkaProducer]:
    """A producer tuned for bulk seeding (large batches, idempotent, acks=all)."""
    prod = AIOKafkaProducer(
        bootstrap_servers=kafka,
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


async def produce_all(
    prod: AIOKafkaProducer, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    """Send every (key, value) and wait until all are acknowledged; returns the count."""
    pending: list[asyncio.Future[Any]] = []
    count = 0
    for key, value in items:
        pending.append(await prod.send(topic, value=value, key=key))
        count += 1
        if len(pending) >= 20_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return count


async def read_json_lines(child: Child, key: str, within: float) -> dict[str, Any]:
    """Wait for a line `{"<key>": …}` in a child's log and return it parsed."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in child.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{key}"' in line:
                with contextlib.suppress(json.JSONDecodeError):
                    data: dict[str, Any] = json.loads(line)
                    if key in data:
                        return data
        if not child.alive() and child.proc.returncode != 0:
            raise RuntimeError(f"{child.name} failed:\n{child.tail()}")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{child.name}: no {key!r} line within {within}s:\n{child.tail()}")
