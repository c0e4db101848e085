"""`dlq list|show|replay`: the dead-letter topic, read from its start without a group."""

from __future__ import annotations

import json
from typing import Any

import typer
from aiokafka import AIOKafkaConsumer
from rich.table import Table

from shared.cli.common import Item, env, err, kafka_security, out, run, send_all, topics
from shared.plumbing.deadletters import DIAGNOSTIC

app = typer.Typer(help="Dead-lettered messages: list, inspect, replay.")


async def read_deadletters(limit: int | None = None) -> list[Any]:
    """Every dead-lettered record from the start of the topic (no consumer group)."""
    consumer = AIOKafkaConsumer(
        topics().deadletter,
        bootstrap_servers=env("KAFKA_BOOTSTRAP_SERVERS"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # the relays publish in transactions
        **kafka_security().client_kwargs(),
    )
    await consumer.start()
    records: list[Any] = []
    try:
        idle = 0
        while idle < 3 and (limit is None or len(records) < limit):
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    return records[:limit] if limit else records


def headers_of(record: Any) -> dict[str, str]:
    """A record's headers as text (for display and our diagnostic headers)."""
    return {k: (v or b"").decode(errors="replace") for k, v in (record.headers or [])}


def original(record: Any) -> Item:
    """The record a dead letter carries, as it was: its topic, key, value and own headers."""
    headers = [(k, v or b"") for k, v in (record.headers or []) if k not in DIAGNOSTIC]
    return headers_of(record)["original_topic"], record.key, record.value, headers


def by_service(records: list[Any], service: str | None) -> list[Any]:
    """The dead letters `service` wrote (all of them for None)."""
    return [r for r in records if service is None or headers_of(r).get("service") == service]


@app.command("list")
def dlq_list(
    limit: int = typer.Option(50, help="At most this many"),
    service: str | None = typer.Option(None, help="Only those this service dead-lettered"),
) -> None:
    """List dead-lettered messages with their origin and reason."""
    records = by_service(run(read_deadletters(None if service else limit)), service)[:limit]
    table = Table("partition:offset", "from", "service", "error", "key")
    for r in records:
        h = headers_of(r)
        origin = (
            f"{h.get('original_topic')}[{h.get('original_partition')}]@{h.get('original_offset')}"
        )
        key = (r.key or b"").decode(errors="replace")[:30]
        table.add_row(
            f"{r.partition}:{r.offset}", origin, h.get("service", ""), h.get("error", "")[:80], key
        )
    out.print(table)
    out.print(f"{len(records)} dead-lettered message(s)")


@app.command("show")
def dlq_show(position: str = typer.Argument(..., help="partition:offset from `dlq list`")) -> None:
    """Show one dead-lettered message: headers and the original bytes."""
    record = find_record(run(read_deadletters()), position)
    out.print_json(json.dumps(headers_of(record)))
    value = record.value or b""
    try:
        out.print_json(value.decode())
    except (UnicodeDecodeError, ValueError):
        out.print(f"(not JSON; {len(value)} bytes) {value[:500]!r}")


def find_record(records: list[Any], position: str) -> Any:
    try:
        partition, offset = (int(x) for x in position.split(":"))
    except ValueError:
        err.print("[red]error:[/red] position is partition:offset, e.g. 0:12")
        raise typer.Exit(2) from None
    for r in records:
        if (r.partition, r.offset) == (partition, offset):
            return r
    err.print(f"[red]error:[/red] no dead letter at {position}")
    raise typer.Exit(1)


@app.command("replay")
def dlq_replay(
    position: list[str] = typer.Argument(None, help="partition:offset (default: all)"),
    service: str | None = typer.Option(None, help="Only those this service dead-lettered"),
) -> None:
    """Send dead-lettered messages back to their original topic (after a fix), each with its
    own key, value and headers (ours, the diagnostic ones, removed)."""
    records = run(read_deadletters())
    if position:
        records = [find_record(records, p) for p in position]
    items = [original(r) for r in by_service(records, service)]
    run(send_all(items, "replaying"))
    out.print(f"replayed {len(items)} message(s) to their original topics")
