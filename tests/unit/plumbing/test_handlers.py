"""The handler registry: accepted types derive from it, events go to their handler in order,
and a rule violation dead-letters only its own event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.contract.events import AccountClosed, AccountSignedUp
from shared.plumbing.handlers import Handlers, event_type
from shared.plumbing.outbox import Outbox, OutboxRow
from shared.plumbing.pipeline import Batch, Delivery
from tests.support import events as make
from tests.support.records import Record


class Refused(Exception):
    pass


def batch_of(*events: Any) -> Batch:
    return Batch(
        events=list(events),
        outbox=Outbox(),
        _deliveries={e.key: Delivery(Record("t", 0, 0, None, None), e, b"") for e in events},
        _dead_letter=lambda _record, reason: OutboxRow("dead", None, None, {"error": reason}),
    )


async def on_account(ctx: list[str], tx: list[str], event: Any) -> None:
    if event.data.reason == "forbidden":
        raise Refused("this reason is forbidden")
    tx.append(f"{ctx[0]}:{event.type}:{event.subject}")


async def begin(ctx: list[str], conn: Any, batch: Batch) -> list[str]:
    return []


HANDLERS: Handlers[list[str], list[str]] = Handlers(
    {AccountClosed: on_account}, begin=begin, refused=(Refused,)
)


def test_what_a_service_accepts_is_the_types_of_its_registry():
    assert event_type(AccountSignedUp) == "account.signed_up.v1"
    assert HANDLERS.accepts == frozenset({"account.closed.v1"})


async def test_each_event_reaches_its_handler_in_order_and_a_refusal_dead_letters_only_it():
    at = datetime(2026, 11, 26, tzinfo=UTC)
    ok1 = make.account_closed("usr_1", "acc_1", closed_at=at)
    bad = make.account_closed("usr_2", "acc_2", closed_at=at, reason="forbidden")
    unhandled = make.signed_up("usr_9")
    ok2 = make.account_closed("usr_3", "acc_3", closed_at=at)
    batch = batch_of(ok1, bad, unhandled, ok2)
    seen: list[str] = []

    async def begin_seen(ctx: list[str], conn: Any, b: Batch) -> list[str]:
        return seen

    handlers = Handlers({AccountClosed: on_account}, begin=begin_seen, refused=(Refused,))
    await handlers.apply(["svc"])(None, batch)  # type: ignore[arg-type]
    assert seen == ["svc:account.closed.v1:usr_1", "svc:account.closed.v1:usr_3"]
    assert batch.rejected == {bad.key}
    assert [r.headers["error"] for r in batch.outbox.rows] == ["contract: this reason is forbidden"]
