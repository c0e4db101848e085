"""Wiring shared by the three services: one place builds the broker, pool, relay and HTTP side.

Each service gives a `ServiceSpec` (its migrations, topics, handlers, API and background
loops); `Runtime` starts them in order and stops them in reverse, so a SIGTERM stops taking
new messages, finishes and commits the batch in hand, drains the outbox and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI
from faststream import AckPolicy
from faststream import Context as Injected
from faststream.kafka import KafkaBroker, KafkaMessage, KafkaRouter
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from opentelemetry.trace import TracerProvider
from starlette.middleware import Middleware

from shared.plumbing import (
    admission,
    db,
    deadletters,
    http,
    limits,
    metrics,
    migrator,
    positions,
    readiness,
    tls,
    tracing,
)
from shared.plumbing.clock import Clock
from shared.plumbing.context import ServiceContext
from shared.plumbing.handlers import Handlers
from shared.plumbing.kafka import bootstrap_list, make_producer, unreachable_leaders
from shared.plumbing.logging import configure_logging, get_logger
from shared.plumbing.loops import Items, Loop, run_loop
from shared.plumbing.pipeline import Pipeline, RecordLike
from shared.plumbing.relay import Relay
from shared.plumbing.settings import ServiceSettings
from shared.plumbing.supervision import supervise

log = get_logger(__name__)

LAG_EVERY = 10.0
PRUNE_EVERY = 3600.0
PIPELINE: Any = Injected("pipeline")
"""What a service's subscriber takes its pipeline as (the runtime sets it at start)."""


C = TypeVar("C", bound=ServiceContext)
Subscriber = TypeVar("Subscriber", bound=Callable[..., Awaitable[None]])


@dataclass(frozen=True)
class Api:
    """A service's HTTP side: routes behind the bearer token, open routes, ASGI middleware."""

    private: APIRouter
    public: APIRouter | None = None
    """Routes NOT behind the bearer token (e.g. signed download links carry their own auth)."""
    middleware: Sequence[Middleware] = ()


@dataclass(frozen=True)
class ServiceSpec(Generic[C]):
    """What makes one service, declared in its `app.py`: everything else is shared."""

    name: str
    context: C
    migrations: Path
    inbound: KafkaRouter
    """The service's batch subscriber (`inbound_options`), declared in its `app.py`."""
    handlers: Handlers[C, Any]
    publishes: Mapping[str, Any]
    """Topic -> contract model (or union) this service publishes, for the AsyncAPI document."""
    api: Callable[[C], Api] | None = None
    loops: Sequence[Loop[C]] = ()


def batch_subscriber(
    router: KafkaRouter, settings: ServiceSettings, *topics: str
) -> Callable[[Subscriber], Subscriber]:
    """How every service consumes: batches into the pipeline, offsets after the commit.

    Ack policy NACK_ON_ERROR on purpose: offsets are committed only after `process` returns
    (the database transaction has committed); an exception seeks back and replays the batch.
    Poison never raises there (the pipeline dead-letters it), so only transient faults replay.
    Consumer options every service shares are set here once: read_committed (see
    docs/relay-fencing.md), and on assignment partitions are sought to the positions stored
    with the data (`positions.SeekToStored`), so a restored database replays what it has not
    seen.
    """
    subscriber: Any = None

    def pool() -> asyncpg.Pool | None:
        pipeline = router.config.context.get("pipeline")
        return pipeline.pool if pipeline is not None else None

    seeker = positions.SeekToStored(lambda: getattr(subscriber, "consumer", None), pool)
    subscriber = router.subscriber(
        *topics,
        group_id=settings.consumer_group,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        auto_offset_reset="earliest",
        # relays publish in transactions: never see a deposed leader's aborted records
        isolation_level="read_committed",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_raw,
        title=f"{settings.service_name}-inbound",
        listener=seeker,
    )
    return cast(Callable[[Subscriber], Subscriber], subscriber)


def records_of(msg: KafkaMessage) -> Sequence[RecordLike]:
    """The Kafka records of one consumed batch, as the pipeline takes them."""
    raw = msg.raw_message
    return raw if isinstance(raw, tuple | list) else (raw,)


async def _raw(msg: Any) -> Any:
    """Skip FastStream's body decoding: the pipeline decodes (and dead-letters) itself."""
    return None


class Runtime(Generic[C]):
    """A running service: its context, pool, broker, relay, pipeline and background loops.

    Tracing (`otel_enabled`): spans go to `tracer_provider` (tests give an in-memory one), or
    to OTLP as the `OTEL_*` variables say; FastStream's middleware traces each batch.
    """

    def __init__(self, spec: ServiceSpec[C], tracer_provider: TracerProvider | None = None) -> None:
        self.spec = spec
        self.context: C = spec.context
        self.settings: ServiceSettings = spec.context.settings
        self.clock: Clock = spec.context.clock
        settings = self.settings
        self._own_provider = settings.otel_enabled and tracer_provider is None
        if self._own_provider:
            tracer_provider = tracing.provider_from_env(spec.name)
        self.tracer_provider = tracer_provider if settings.otel_enabled else None
        self.tracer = tracing.tracer_of(self.tracer_provider)
        middlewares = (
            [KafkaTelemetryMiddleware(tracer_provider=self.tracer_provider)]
            if self.tracer_provider is not None
            else []
        )
        self.broker = KafkaBroker(
            bootstrap_list(settings.kafka_bootstrap_servers),
            client_id=f"privacy-plane-{spec.name}",
            security=settings.kafka.faststream_security(),
            # Topics are created by `privacy-plane topics` / the compose init with their
            # partitions and cleanup policies, never implicitly with broker defaults.
            allow_auto_create_topics=False,
            middlewares=middlewares,
        )
        self.broker.include_router(spec.inbound)
        self._document_publications()
        self._pool: asyncpg.Pool | None = None
        self.pipeline: Pipeline | None = None
        self.relay: Relay | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # the loops that talk to the broker's clients stop before the broker does: one cut
        # short inside a ping or a metadata call would leave its connection open
        self._probes_stop = asyncio.Event()
        self._probes: list[asyncio.Task[None]] = []
        self.started = False
        self.readiness = readiness.Readiness()

    def _document_publications(self) -> None:
        """Doc-only FastStream publishers: the outbox relay publishes, AsyncAPI describes."""
        deadletter = self.settings.topics.deadletter
        for topic, schema in {**self.spec.publishes, deadletter: bytes}.items():
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
        return self.settings.database_dsn()

    async def start(self) -> None:
        """Migrate (if asked) or check the schema; open the pool and context; start the relay,
        the consumer and the loops."""
        s = self.settings
        await self._check_kafka_credentials()
        try:
            if s.migrate_on_start:
                await migrator.migrate_service(
                    s.migrate_dsn(), self.spec.name, s.db_schema, self.spec.migrations, self.dsn
                )
            self._pool = await db.create_pool(
                self.dsn, s.db_schema, min_size=s.pool_min_size, max_size=s.pool_max_size
            )
        except ssl.SSLError as exc:
            raise tls.postgres_refusal(exc, s.env_prefix, self.dsn) from None
        try:
            async with self.pool.acquire() as conn:
                await migrator.require_migrated(
                    conn, self.spec.name, s.db_schema, self.spec.migrations
                )
        except BaseException as exc:
            await self._pool.close()
            self._pool = None
            if isinstance(exc, migrator.NotMigrated):
                log.error("schema_not_migrated", service=s.service_name, reason=str(exc))
            raise
        await self.context.open(self._pool)

        def new_producer() -> AIOKafkaProducer:
            return make_producer(
                s.kafka_bootstrap_servers,
                s.kafka,
                s.kafka_compression,
                transactional_id=s.transactional_id,
            )

        # unstarted: the relay starts it once it leads (its start fences the previous leader)
        self.relay = Relay(
            self.dsn,
            s.db_schema,
            new_producer(),
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
            accepts=self.spec.handlers.accepts,
            apply=self.spec.handlers.apply(self.context, self.tracer),
            tombstone_topics=frozenset(s.topics.compacted()),
            max_event_bytes=s.max_event_bytes,
        )
        self.broker.context.set_global("pipeline", self.pipeline)
        await self.broker.start()
        lag: Loop[Any] = Loop("consumer-lag", self._report_lag, lambda _: LAG_EVERY)
        ready: Loop[Any] = Loop("readiness", self._check_ready, lambda _: readiness.EVERY)
        prune: Loop[Any] = Loop("deadletter-memory", self._forget_old, lambda _: PRUNE_EVERY)
        for loop in (ready, lag):
            run = functools.partial(run_loop, loop, self.context, s.service_name, self._probes_stop)
            self._background(loop.name, run, self._probes_stop)
            self._probes.append(self._tasks.pop())
        for loop in (prune, *self.spec.loops):
            run = functools.partial(run_loop, loop, self.context, s.service_name, self._stop)
            self._background(loop.name, run)
        await self._check_ready(self.context, Items(s.service_name, "readiness"))  # answer at once
        self.started = True
        log.info("service_started", service=s.service_name)

    async def _check_kafka_credentials(self) -> None:
        """Stop start-up with one line naming the setting when TLS or SASL is refused."""
        s = self.settings
        if s.kafka.security_protocol == "PLAINTEXT":
            return
        kwargs = s.kafka.client_kwargs()
        reason = await tls.kafka_refusal(s.kafka_bootstrap_servers, kwargs, s.env_prefix)
        if reason is not None:
            raise tls.TransportRefused(f"Kafka at {s.kafka_bootstrap_servers}: {reason}")

    def _background(
        self, name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event | None = None
    ) -> None:
        """Start `run()` as a supervised task (see `supervise`) until `stop` (the service's)."""
        supervised = supervise(self.settings.service_name, name, run, stop or self._stop)
        self._tasks.append(asyncio.create_task(supervised, name=name))

    async def _check_ready(self, _: ServiceContext, __: Items) -> bool:
        """Refresh what /readyz answers (the only place it asks the database and broker)."""
        topics = self.settings.topics.all()
        leaders = functools.partial(unreachable_leaders, self.broker.config.admin_client, topics)
        await readiness.check(
            self.readiness, self.pool, self.spec.migrations, self.broker.ping, leaders
        )
        return False

    async def _forget_old(self, _: ServiceContext, __: Items) -> bool:
        """Dead-letter origins older than `deadletter_memory_days` go, a batch at a time."""
        async with self.pool.acquire() as conn:
            gone = await deadletters.forget_old(conn, self.settings.deadletter_memory_days)
        return gone >= 10_000

    async def _report_lag(self, _: ServiceContext, __: Items) -> bool:
        """Publish the consumer lag per partition (end offset minus position) as a gauge."""
        service = self.settings.service_name
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
        return False

    async def stop(self) -> None:
        """Stop consuming (the batch in hand commits), stop loops, drain the outbox, close."""
        log.info("service_stopping", service=self.settings.service_name)
        self._probes_stop.set()
        for task in self._probes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=15)
        self._probes.clear()
        await self.broker.stop()
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=15)
        self._tasks.clear()
        if self.relay is not None:
            await self.relay.producer.stop()  # the relay's current one (it may renew it)
        await self.context.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.started = False
        log.info("service_stopped", service=self.settings.service_name)
        if self._own_provider:
            tracing.shutdown(self.tracer_provider)  # flush the last spans

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
        api = self.spec.api(self.context) if self.spec.api is not None else None
        gate = admission.Gate.of(self.settings)
        app = FastAPI(
            title=f"Privacy Plane {self.spec.name}",
            version=http.API_VERSION,
            lifespan=lifespan,
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
            middleware=[*limits.front(self.settings, gate), *(api.middleware if api else ())],
        )
        app.state.settings = self.settings  # shared.plumbing.serve reads the HTTPS settings
        admission.expose(app, gate, self.settings)  # to shared.plumbing.serve's protocol
        app.include_router(http.ops_router(self))
        app.include_router(http.docs_router(self, app), dependencies=[http.bearer(self.settings)])
        app.include_router(http.ops_details_router(self), dependencies=[http.bearer(self.settings)])
        if api is not None:
            app.include_router(
                api.private,
                dependencies=[http.bearer(self.settings)],
                responses=http.UNAUTHORISED,
            )
            if api.public is not None:
                app.include_router(api.public)
        return app


def create_app(spec: ServiceSpec[Any]) -> FastAPI:
    """Configure logging once and build the ASGI app for `uvicorn --factory`."""
    configure_logging(spec.context.settings.log_format, spec.context.settings.log_level)
    return Runtime(spec).asgi()
