"""`publish`: validate events against the contract, then send them to their topic."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer

from shared.cli.common import (
    SOURCE,
    CliError,
    Item,
    env,
    err,
    event_item,
    out,
    run,
    send_all,
    topics,
)
from shared.contract.codec import DecodeError, decode, record_size
from shared.contract.envelope import MAX_EVENT_BYTES, CloudEvent
from shared.contract.events import EVENT_TYPES


def build_event(raw: dict[str, Any]) -> Any:
    """Fill id/time/specversion/source when absent, then validate against the contract."""
    raw.setdefault("specversion", "1.0")
    raw.setdefault("id", new_event_id())
    raw.setdefault("source", SOURCE)
    raw.setdefault("time", datetime.now(UTC).isoformat())
    if raw.get("type") not in EVENT_TYPES:
        known = ", ".join(sorted(EVENT_TYPES))
        raise CliError(f"unknown event type {raw.get('type')!r}; known: {known}")
    try:
        return decode(orjson.dumps(raw))
    except DecodeError as exc:
        raise CliError(exc.reason) from None


def max_event_bytes() -> int:
    """The consumers' bound on one record: `PP_MAX_EVENT_BYTES` if they were given another."""
    text = env("MAX_EVENT_BYTES", str(MAX_EVENT_BYTES))
    if not text.isdigit():
        raise CliError(f"PP_MAX_EVENT_BYTES must be a number of bytes, not {text!r}")
    return int(text)


def check_size(item: Item, event: CloudEvent[Any], limit: int) -> None:
    """Refuse a record over `limit`: consumers would dead-letter it unparsed (too_large), and
    past Kafka's message size the broker would refuse it after a partial send."""
    _, _, value, headers = item
    size = record_size(value, headers)  # what the services measure against the same bound
    if size > limit:
        raise CliError(
            f"{event.type} id={event.id}: the encoded event is {size} bytes (value and "
            f"headers), over the limit of {limit} (MAX_EVENT_BYTES); nothing was sent"
        )


def new_event_id() -> str:
    import uuid

    return str(uuid.uuid4())


def publish(
    file: Path | None = typer.Argument(
        None, help="JSON event, or a JSON array / JSON lines; - for stdin"
    ),
    event_type: str | None = typer.Option(None, "--type", help="Build the event from flags"),
    subject: str | None = typer.Option(None, help="The subject (Kafka key)"),
    data: str = typer.Option("{}", help="The event's data as JSON"),
    topic: str | None = typer.Option(None, help="Override the contract's topic"),
) -> None:
    """Validate events against the contract, then publish them (keyed by subject)."""

    async def go() -> None:
        events = [build_event(raw) for raw in raws]
        items = [event_item(topic or topics().for_type(e.type), e) for e in events]
        limit = max_event_bytes()
        for item, event in zip(items, events, strict=True):
            check_size(item, event, limit)  # every one before the first is sent
        await send_all(items, "publishing")
        for event in events:
            out.print(f"published {event.type} id={event.id} subject={event.subject}")

    if event_type:
        if not subject:
            err.print("[red]error:[/red] --type needs --subject")
            raise typer.Exit(2)
        raws = [{"type": event_type, "subject": subject, "data": json.loads(data)}]
    elif file is not None:
        raws = parse_many(sys.stdin.read() if str(file) == "-" else file.read_text())
    else:
        err.print("[red]error:[/red] give a FILE (or -) or --type/--subject/--data")
        raise typer.Exit(2)
    run(go())


def parse_many(text: str) -> list[dict[str, Any]]:
    """One JSON object, a JSON array, or JSON lines."""
    try:
        value = json.loads(text)
        return value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise CliError(f"not JSON: {exc}") from None
