"""A service's event handlers: one registry `{event model: handler}`, one handler signature.

Every handler is `async def on_x(ctx, tx, event)`: the service's `Context`, the batch's unit of
work and the event. What the service accepts is derived from the registry, and a refusal the
domain raises dead-letters that one event before anything is written for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry.trace import Tracer

from shared.contract.events import AnyEvent
from shared.plumbing import tracing
from shared.plumbing.db import Conn
from shared.plumbing.outbox import Outbox
from shared.plumbing.pipeline import ApplyFn, Batch

C = TypeVar("C")
U = TypeVar("U")

Handler = Callable[[C, U, Any], Awaitable[None]]
"""`(ctx, tx, event)`: the third argument is the model the registry files it under."""


@dataclass(frozen=True)
class Tx:
    """One consumed batch's transaction as a handler sees it: the connection and the batch."""

    conn: Conn
    batch: Batch

    @property
    def outbox(self) -> Outbox:
        """Where the handler's outbound events go (committed with the batch)."""
        return self.batch.outbox


async def plain_tx(_: Any, conn: Conn, batch: Batch) -> Tx:
    """The unit of work of services that need no batch-wide preparation."""
    return Tx(conn, batch)


async def _nothing(_: Any, __: Any) -> None:
    return None


def event_type(model: type[Any]) -> str:
    """The CloudEvents `type` a contract model carries (its `type` field's default)."""
    value = model.model_fields["type"].default
    assert isinstance(value, str), f"{model.__name__} has no fixed type"
    return value


@dataclass(frozen=True)
class Handlers(Generic[C, U]):
    """What a service does with each event type it accepts.

    `begin` opens the batch's unit of work (`plain_tx`, or a service's own that loads what the
    whole batch needs at once) and `end` writes it out; `refused` are the domain's rule
    violations, dead-lettered as `contract: <message>`.
    """

    table: Mapping[type[Any], Handler[C, U]]
    begin: Callable[[C, Conn, Batch], Awaitable[U]]
    end: Callable[[C, U], Awaitable[None]] = _nothing
    refused: tuple[type[Exception], ...] = ()

    @property
    def accepts(self) -> frozenset[str]:
        """The event types this service consumes; others on its topics are ignored."""
        return frozenset(event_type(model) for model in self.table)

    async def dispatch(self, ctx: C, tx: U, batch: Batch, tracer: Tracer = tracing.NOOP) -> None:
        """Hand each event of `batch` to its handler, in order."""
        for event in batch.events:
            await self.handle(ctx, tx, batch, event, tracer)

    async def handle(
        self, ctx: C, tx: U, batch: Batch, event: AnyEvent, tracer: Tracer = tracing.NOOP
    ) -> None:
        """One event: its handler, or a dead letter when the domain refuses it.

        The handler runs in the event's trace (`tracing.handling`): its logs carry the trace
        id, and what it publishes carries the trace context on.
        """
        handler = self.table.get(type(event))
        if handler is None:
            return
        try:
            with tracing.handling(tracer, event):
                await handler(ctx, tx, event)
        except self.refused as exc:
            batch.reject(event, f"contract: {exc}")

    def apply(self, ctx: C, tracer: Tracer = tracing.NOOP) -> ApplyFn:
        """The pipeline's step inside the batch's transaction: begin, dispatch, end."""

        async def apply(conn: Conn, batch: Batch) -> None:
            tx = await self.begin(ctx, conn, batch)
            await self.dispatch(ctx, tx, batch, tracer)
            await self.end(ctx, tx)

        return apply
