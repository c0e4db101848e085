"""Wiring shared by the three services: one place builds the broker, pool, relay and HTTP side.

Each service gives a `ServiceSpec` (its migrations, topics, handlers, API and background
loops); `Runtime` starts them in order and stops them in reverse, so a SIGTERM stops taking
new messages, finishes and commits the batch in hand, drains the outbox and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI
from faststream import AckPolicy, Context
from faststream.kafka import KafkaBroker, KafkaMessage, KafkaRouter

from shared.plumbing import db, http, metrics
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.kafka import make_producer
from shared.plumbing.logging import configure_logging, get_logger
from shared.plumbing.pipeline import ApplyFn, Pipeline
from shared.plumbing.relay import Relay
from shared.plumbing.settings import ServiceSettings

log = get_logger(__name__)

Background = Callable[["Runtime", asyncio.Event], Coroutine[Any, Any, None]]


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


@dataclass
class ServiceSpec:
    """What makes one service: everything else is shared."""

    name: str
    migrations: Path
    topics: Callable[[ServiceSettings], list[str]]
    accepts: set[str]
    make_apply: Callable[[Runtime], ApplyFn]
    make_api: Callable[[Runtime], APIRouter] | None = None
    make_public_api: Callable[[Runtime], APIRouter] | None = None
    """Routes NOT behind the bearer token (e.g. signed download links carry their own auth)."""
    background: Sequence[Background] = field(default_factory=tuple)
    publishes: Callable[[ServiceSettings], dict[str, Any]] | None = None
    """Topic -> contract model (or union) this service publishes, for the AsyncAPI document."""


def consumer_router(settings: ServiceSettings, topics: list[str]) -> KafkaRouter:
    """The service's one subscriber: batches from its topics into the pipeline.

    Ack policy NACK_ON_ERROR on purpose: offsets are committed only after `process` returns
    (the database transaction has committed); an exception seeks back and replays the batch.
    Poison never raises here (the pipeline dead-letters it), so only transient faults replay.
    """
    router = KafkaRouter()

    @router.subscriber(
        *topics,
        group_id=settings.consumer_group,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_raw,
        title=f"{settings.service_name}-inbound",
    )
    async def consume(_: Any, msg: KafkaMessage, pipeline: Pipeline = Context("pipeline")) -> None:
        raw = msg.raw_message
        records = raw if isinstance(raw, tuple | list) else (raw,)
        await pipeline.process(records)

    return router


async def _raw(msg: Any) -> Any:
    """Skip FastStream's body decoding: the pipeline decodes (and dead-letters) itself."""
    return None


class Runtime:
    """A running service: settings, pool, broker, relay, background loops."""

    def __init__(
        self, settings: ServiceSettings, spec: ServiceSpec, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.clock: Clock = clock or SystemClock()
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=f"privacy-plane-{spec.name}",
            security=settings.kafka.faststream_security(),
            # Topics are created by `privacy-plane topics` / the compose init with their
            # partitions and cleanup policies, never implicitly with broker defaults.
            allow_auto_create_topics=False,
        )
        self.broker.include_router(consumer_router(settings, spec.topics(settings)))
        self._document_publications()
        self._pool: asyncpg.Pool | None = None
        self.pipeline: Pipeline | None = None
        self.relay: Relay | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    def _document_publications(self) -> None:
        """Doc-only FastStream publishers: the outbox relay publishes, AsyncAPI describes."""
        published = self.spec.publishes(self.settings) if self.spec.publishes else {}
        deadletter = self.settings.topics.deadletter
        for topic, schema in {**published, deadletter: bytes}.items():
            self.broker.publisher(
                topic,
                schema=schema,
                title=f"{self.spec.name}:{topic}",
                description=(
                    "Original bytes of poison input; headers original_topic, original_partition, "
                    "original_offset, service, error."
                    if topic == deadletter
                    else "CloudEvents 1.0 (structured JSON), key = subject, via the outbox."
                ),
            )

    @property
    def pool(self) -> asyncpg.Pool:
        """The service's connection pool (after start)."""
        assert self._pool is not None, "runtime not started"
        return self._pool

    @property
    def dsn(self) -> str:
        return self.settings.database_url.get_secret_value()

    async def start(self) -> None:
        """Migrate, open the pool, start the relay, the consumer and background loops."""
        s = self.settings
        conn = await asyncpg.connect(self.dsn)
        try:
            await db.migrate(conn, s.db_schema, self.spec.migrations)
        finally:
            await conn.close()
        self._pool = await db.create_pool(
            self.dsn, s.db_schema, min_size=s.pool_min_size, max_size=s.pool_max_size
        )

        def new_producer() -> AIOKafkaProducer:
            return make_producer(s.kafka_bootstrap_servers, s.kafka, s.kafka_compression)

        producer = new_producer()
        await producer.start()
        self.relay = Relay(
            self.dsn,
            s.db_schema,
            producer,
            service=s.service_name,
            batch_size=s.relay_batch_size,
            new_producer=new_producer,
        )
        self._background("outbox-relay", functools.partial(self.relay.run, self._stop))
        self.pipeline = Pipeline(
            service=s.service_name,
            schema=s.db_schema,
            pool=self.pool,
            deadletter_topic=s.topics.deadletter,
            accepts=self.spec.accepts,
            apply=self.spec.make_apply(self),
            tombstone_topics=frozenset(s.topics.compacted()),
        )
        self.broker.context.set_global("pipeline", self.pipeline)
        await self.broker.start()
        self._background("consumer-lag", self._report_lag)
        for loop in self.spec.background:
            self._background(loop.__name__, functools.partial(loop, self, self._stop))
        self.started = True
        log.info("service_started", service=s.service_name)

    def _background(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Start `run()` as a supervised task (see `supervise`)."""
        supervised = supervise(self.settings.service_name, name, run, self._stop)
        self._tasks.append(asyncio.create_task(supervised, name=name))

    async def _report_lag(self, every: float = 10.0) -> None:
        """Publish the consumer lag per partition (end offset minus position) as a gauge."""
        service = self.settings.service_name
        while not self._stop.is_set():
            for subscriber in self.broker.subscribers:
                consumer = getattr(subscriber, "consumer", None)
                if consumer is None:
                    continue
                for tp in consumer.assignment():
                    with contextlib.suppress(Exception):  # a rebalance may take tp away
                        end = consumer.highwater(tp)
                        if end is not None:
                            lag = max(0, end - await consumer.position(tp))
                            metrics.CONSUMER_LAG.labels(service, tp.topic, tp.partition).set(lag)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every)

    async def stop(self) -> None:
        """Stop consuming (the batch in hand commits), stop loops, drain the outbox, close."""
        log.info("service_stopping", service=self.settings.service_name)
        await self.broker.stop()
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=15)
        self._tasks.clear()
        if self.relay is not None:
            await self.relay.producer.stop()  # the relay's current one (it may renew it)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.started = False
        log.info("service_stopped", service=self.settings.service_name)

    def asgi(self) -> FastAPI:
        """The HTTP side: read API (bearer token), health, readiness, metrics, AsyncAPI."""

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        # Only health, readiness and metrics are open (DESIGN §5): no public Swagger/ReDoc,
        # and the OpenAPI and AsyncAPI documents need the token like the read API.
        app = FastAPI(
            title=f"Privacy Plane {self.spec.name}",
            lifespan=lifespan,
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
        )
        app.include_router(http.ops_router(self))
        app.include_router(http.docs_router(self, app), dependencies=[http.bearer(self.settings)])
        if self.spec.make_api is not None:
            app.include_router(self.spec.make_api(self), dependencies=[http.bearer(self.settings)])
        if self.spec.make_public_api is not None:
            app.include_router(self.spec.make_public_api(self))
        return app


def create_app(settings: ServiceSettings, spec: ServiceSpec) -> FastAPI:
    """Configure logging once and build the ASGI app for `uvicorn --factory`."""
    configure_logging(settings.log_format, settings.log_level)
    return Runtime(settings, spec).asgi()
