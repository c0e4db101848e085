"""The fault suite's harness: services as real OS processes, load, readers, infrastructure faults.

A `ServiceProcess` runs `python -m shared.plumbing.serve` (uvicorn, as deployed) on a free
port with a private schema, consumer group and prefixed topics, and its logs go to a file (the
log scan reads them all). It can be
killed with SIGKILL, stopped with SIGTERM and started again; several may share one schema and
group (replicas). Figures go to `STATS` for the session summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contract.codec import encode
from shared.contract.envelope import CloudEvent
from shared.contract.topics import Topics
from tests.faults.chaos_app import KILL_MARK
from tests.faults.stats import STATS, TOPICS_USED
from tests.support.infra import ROOT, Infra

CHAOS_APP = "tests.faults.chaos_app:create"
STOP_GRACE = 30.0
"""Seconds a deployment waits after SIGTERM before it kills a service (docker compose's
`stop_grace_period`, deploy/local/run's STOP_TIMEOUT): a clean stop must end within them."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(
    prefix: str,
    infra: Infra,
    topics: Topics,
    schema: str,
    *,
    token: str = "fault-token-0123456",  # noqa: S107 (a test token)
    database_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment variables for one service (`prefix` like `CONSENT_`)."""
    env = {
        f"{prefix}KAFKA_BOOTSTRAP_SERVERS": infra.kafka,
        f"{prefix}DATABASE_URL": database_url or infra.database_url,
        f"{prefix}DB_SCHEMA": schema,
        f"{prefix}GROUP_ID": f"g-{schema}",
        f"{prefix}API_TOKEN": token,
        f"{prefix}LOG_FORMAT": "json",
        f"{prefix}BATCH_TIMEOUT_MS": "20",
    }
    for field, name in topics.model_dump().items():
        env[f"{prefix}TOPICS__{field.upper()}"] = name
    TOPICS_USED.setdefault(infra.kafka, set()).update(topics.all())
    env.update(extra or {})
    return env


class ServiceProcess:
    """One replica of a service as an OS process (uvicorn), killable and restartable."""

    def __init__(
        self,
        label: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        app_module: str,
        chaos: bool = True,
    ) -> None:
        self.label = label
        self.env = env
        self.log_dir = log_dir
        self.app_module = app_module
        self.chaos = chaos
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self.log_files: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, kill_at: str = "") -> None:
        """Start the process (does not wait for readiness)."""
        assert not self.alive, f"{self.label} is already running"
        self.starts += 1
        self.port = free_port()
        log_path = self.log_dir / f"{self.label}.{self.starts}.log"
        self.log_files.append(log_path)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        target = CHAOS_APP if self.chaos else f"{self.app_module}:create"
        env["PP_FAULT_APP"] = self.app_module
        env["PP_FAULT_KILL"] = kill_at
        if kill_at:
            STATS.faults_injected += 1
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shared.plumbing.serve",  # as deployed: uvicorn with admission's protocol
                    target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--timeout-graceful-shutdown",
                    "30",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def readyz(self) -> int | None:
        """The status of /readyz, or None when nothing answers."""
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                return (await client.get(f"{self.url}/readyz")).status_code
        except httpx.HTTPError:
            return None

    async def wait_ready(self, timeout: float = 60) -> None:
        """Poll /readyz until 200; fail early if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"{self.label} exited: {self.tail()}")
            if await self.readyz() == 200:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.label} not ready within {timeout}s: {self.tail()}")

    async def wait_status(self, wanted: int, timeout: float = 60) -> None:
        """Poll /readyz until it answers `wanted` (e.g. 503 during an outage)."""
        deadline = time.monotonic() + timeout
        seen: int | None = None
        while time.monotonic() < deadline:
            seen = await self.readyz()
            if seen == wanted:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.label} /readyz stayed {seen}, wanted {wanted}")

    def kill(self) -> None:
        """SIGKILL now."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            STATS.processes_killed += 1
            STATS.faults_injected += 1

    async def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself (e.g. its planned kill); its return code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label} still running after {timeout}s")
            await asyncio.sleep(0.1)
        if self.proc.returncode == -signal.SIGKILL:
            STATS.processes_killed += 1
        return self.proc.returncode

    async def terminate(self, timeout: float = 45) -> tuple[int, float]:
        """SIGTERM and wait; (return code, seconds it took). Killed if it overstays.

        uvicorn re-raises the signal after a graceful shutdown, so a clean exit is -15 (or 0).
        """
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await self.wait_exit(timeout)
        except AssertionError:
            self.kill()
            raise
        STATS.processes_terminated += 1
        return code, time.monotonic() - started

    def stopped_cleanly(self) -> bool:
        """The last run logged the runtime's orderly stop (consumer, loops, outbox drained)."""
        return self.alive is False and '"service_stopped"' in self.log_files[-1].read_text(
            errors="replace"
        )

    def planned_kills(self) -> int:
        """How many times this replica reached its planned kill point (all its runs)."""
        return sum(p.read_text(errors="replace").count(KILL_MARK) for p in self.log_files)

    def tail(self, lines: int = 30) -> str:
        if not self.log_files:
            return "(no log)"
        text = self.log_files[-1].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop_now(self) -> None:
        """Clean-up: SIGKILL without counting it as a fault."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.asynccontextmanager
async def processes(*procs: ServiceProcess) -> AsyncIterator[None]:
    """Make sure every process is gone afterwards, whatever happened."""
    try:
        yield
    finally:
        for proc in procs:
            proc.stop_now()


async def rebalance_under_load(
    replicas: Sequence[ServiceProcess],
    load: Callable[[], Any],
    rng: Any,
    kill_after: tuple[float, float] = (0.5, 1.5),
    add_after: tuple[float, float] = (0.3, 1.0),
) -> None:
    """Three replicas take `load`; one is killed and a fourth added while it flows."""
    for r in replicas[:3]:
        r.start()
    for r in replicas[:3]:
        await r.wait_ready()
    producing = asyncio.create_task(load())
    await asyncio.sleep(rng.uniform(*kill_after))
    replicas[1].kill()
    await asyncio.sleep(rng.uniform(*add_after))
    replicas[3].start()
    await replicas[3].wait_ready()
    await producing


# ---------------------------------------------------------------- load ----


async def send(
    bootstrap: str,
    topic: str,
    items: Iterable[CloudEvent[Any] | tuple[bytes | None, bytes | None]],
    *,
    pace: float = 0.0,
    chunk: int = 500,
) -> int:
    """Produce events (keyed by subject) or raw pairs in order; `pace` seconds between chunks."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=2 * 1024 * 1024,
    )
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for item in items:
            key, value = encode(item) if isinstance(item, CloudEvent) else item
            pending.append(await producer.send(topic, value=value, key=key))
            sent += 1
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                pending.clear()
                if pace:
                    await asyncio.sleep(pace)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
        STATS.events_sent += sent
    return sent


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    """Every partition of `topic` (it must exist)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = sorted(p["partition"] for p in described["partitions"])
    assert partitions, f"topic {topic} does not exist ({described})"
    return [TopicPartition(topic, p) for p in partitions]


async def _positioned(bootstrap: str, topic: str) -> tuple[AIOKafkaConsumer, dict[Any, int]]:
    """A started consumer assigned every partition of `topic` from the start, and the end
    offsets as of now (what a reader must reach before it may say what the topic holds)."""
    tps = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        isolation_level="read_committed",  # what downstream readers see (docs/relay-fencing.md)
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, ends


async def read_all(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Any]], bool] = lambda _: True,
    timeout: float = 60.0,
    settle: float = 1.0,
) -> list[Any]:
    """Every record of `topic` from the start: at least up to its end offsets as of the call,
    and until `until` has held for `settle` seconds; fails (never returns a part) on timeout."""
    consumer, ends = await _positioned(bootstrap, topic)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        satisfied_at: float | None = None
        reached = False
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for part in batch.values():
                records.extend(part)
            reached = all([await consumer.position(tp) >= end for tp, end in ends.items()])
            if reached and until(records):
                satisfied_at = satisfied_at or time.monotonic()
                if time.monotonic() - satisfied_at >= settle:
                    return records
            else:
                satisfied_at = None
        raise AssertionError(
            f"{topic}: {len(records)} records read in {timeout}s, end offsets {ends} "
            f"{'not reached' if not reached else 'reached but the condition never held'}"
        )
    finally:
        await consumer.stop()


async def group_caught_up(
    bootstrap: str, group: str, topics: Iterable[str], timeout: float
) -> None:
    """Until consumer `group` has committed, on every partition of `topics`, the end offsets
    as of the call: every record published before was processed and its transaction committed
    (a service commits offsets only after its database commit)."""
    from aiokafka.admin import AIOKafkaAdminClient

    ends: dict[Any, int] = {}
    for topic in topics:
        consumer, topic_ends = await _positioned(bootstrap, topic)
        await consumer.stop()
        ends.update({tp: end for tp, end in topic_ends.items() if end > 0})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:

        async def caught_up() -> bool:
            done = await admin.list_consumer_group_offsets(group)
            return all(tp in done and done[tp].offset >= end for tp, end in ends.items())

        await poll(caught_up, timeout=timeout, what=f"group {group} to reach {ends}")
    finally:
        await admin.close()


async def outbox_published(database_url: str, schema: str, timeout: float = 120) -> None:
    """Until every outbox row written before the call has been published (and deleted)."""
    rows = await query(database_url, f'SELECT max(id) AS n FROM "{schema}".outbox')
    last = rows[0]["n"]
    if last is None:
        return

    async def gone() -> bool:
        left = await query(database_url, f'SELECT 1 FROM "{schema}".outbox WHERE id <= $1', last)
        return not left

    await poll(gone, timeout=timeout, what=f"{schema}.outbox rows up to {last} to be published")


def inbound_topics(app_module: str, topics: Topics) -> list[str]:
    """The topics a service reads (those of the event types its handlers accept)."""
    import importlib

    handlers = importlib.import_module(app_module.rsplit(".", 1)[0] + ".handlers")
    return topics.for_types(handlers.HANDLERS.accepts)


async def settled_dead_letters(
    infra: Infra, topics: Topics, schema: str, app_module: str, timeout: float = 120
) -> list[Any]:
    """The service's complete dead letters for everything published to it so far.

    Positive signals only: its consumer group has committed the end offsets of every topic it
    reads (as of the call), the outbox rows written until then are published, and the
    dead-letter topic is read up to its end offsets as of that moment.
    """
    await group_caught_up(infra.kafka, f"g-{schema}", inbound_topics(app_module, topics), timeout)
    await outbox_published(infra.database_url, schema, timeout)
    return await read_all(infra.kafka, topics.deadletter, timeout=timeout)


@dataclass(frozen=True)
class Copies:
    """How the records of an outbound topic repeat, by CloudEvents id."""

    unique: int
    extra_copies: int
    conflicts: int
    ids: frozenset[str]


def copies(records: Sequence[Any]) -> Copies:
    """Count ids, extra copies (same id, same bytes) and conflicts (same id, other bytes).

    The extra copies go into the summary's re-sent figure (each outbound read is counted once).
    """
    import orjson

    values: dict[str, set[bytes]] = defaultdict(set)
    counts: Counter[str] = Counter()
    for record in records:
        if record.value is None:
            continue
        event_id = str(orjson.loads(record.value)["id"])
        counts[event_id] += 1
        values[event_id].add(record.value)
    extra = sum(n - 1 for n in counts.values())
    STATS.resent += extra
    return Copies(
        unique=len(counts),
        extra_copies=extra,
        conflicts=sum(1 for v in values.values() if len(v) > 1),
        ids=frozenset(counts),
    )


# -------------------------------------------------------------- database ----


async def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One query on a fresh connection."""
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def poll(
    check: Callable[[], Any], *, timeout: float, interval: float = 0.3, what: str = "condition"
) -> Any:
    """Await `check()` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(asyncpg.UndefinedTableError, OSError):
            last = await check()
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --------------------------------------------------------- infrastructure ----


async def _deploy(*args: str, env: dict[str, str] | None = None) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / "deploy/local" / args[0]),
        *args[1:],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"deploy/local/{' '.join(args)} failed: {out.decode()[-2000:]}")


@dataclass(frozen=True)
class PrivateInfra:
    """A Kafka and a PostgreSQL of this test alone (deploy/local with its own state and ports)."""

    infra: Infra
    env: dict[str, str]


@contextlib.asynccontextmanager
async def private_infra() -> AsyncIterator[PrivateInfra]:
    """Start a private Kafka + PostgreSQL; always stop and purge them afterwards.

    Restarting the machine's shared broker would stall every other test running beside the
    suite (and a broker holding thousands of test partitions takes a minute to come back).
    """
    state = ROOT / ".local" / f"fault-infra-{os.getpid()}-{free_port()}"
    env = {
        **os.environ,
        "PP_LOCAL_DIR": str(state),
        "PP_KAFKA_PORT": str(free_port()),
        "PP_KAFKA_CONTROLLER_PORT": str(free_port()),
        "PP_PG_PORT": str(free_port()),
    }
    try:
        await _deploy("up", env=env)
        values = dict(
            line.split("=", 1) for line in (state / "env").read_text().splitlines() if "=" in line
        )
        yield PrivateInfra(
            Infra(values["KAFKA_BOOTSTRAP_SERVERS"], values["DATABASE_URL"], "private"), env
        )
    finally:
        await _deploy("down", "--purge", env=env)
        shutil.rmtree(state, ignore_errors=True)  # its broker and database logs
        TOPICS_USED.pop(f"127.0.0.1:{env['PP_KAFKA_PORT']}", None)  # gone with its broker


@contextlib.asynccontextmanager
async def outage(component: str, private: PrivateInfra) -> AsyncIterator[None]:
    """Stop `kafka` or `postgres` of a private deploy/local; ALWAYS start it again."""
    STATS.faults_injected += 1
    try:
        await _deploy("down", component, env=private.env)
        yield
    finally:
        await _deploy("up", component, env=private.env)


# ------------------------------------------------------------- private space ----


async def private_space(infra: Infra, partitions: int = 3) -> tuple[Topics, str]:
    """A fresh set of prefixed topics and a schema name (the caller drops the schema)."""
    import uuid

    from shared.plumbing.kafka import TopicPolicy, ensure_topics

    tid = uuid.uuid4().hex[:10]
    topics = Topics().with_prefix(f"f{tid}.")
    await ensure_topics(infra.kafka, topics, TopicPolicy(partitions=partitions))
    TOPICS_USED.setdefault(infra.kafka, set()).update(topics.all())
    return topics, f"f_{tid}"


async def delete_topics(bootstrap: str, names: set[str]) -> int:
    """Delete the topics among `names` that exist (keeps the shared broker small)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = sorted(set(await admin.list_topics()) & names)
        for start in range(0, len(existing), 100):
            await admin.delete_topics(existing[start : start + 100])
        return len(existing)
    finally:
        await admin.close()


async def drop_schema(infra: Infra, schema: str) -> None:
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def inbox_count(infra: Infra, schema: str) -> int:
    rows = await query(infra.database_url, f'SELECT count(*) AS n FROM "{schema}".inbox')
    return int(rows[0]["n"])


async def wait_inbox(infra: Infra, schema: str, count: int, timeout: float = 240) -> None:
    """Until the service recorded `count` distinct events in its inbox."""

    async def done() -> bool:
        return await inbox_count(infra, schema) >= count

    await poll(done, timeout=timeout, interval=0.5, what=f"{count} events in {schema}.inbox")
