"""`privacy-plane`: the operator's command line.

Kafka commands (publish, holds, dead letters, topics) talk to the broker; the others ask the
services' HTTP APIs with the bearer token. Settings come from the environment (`PP_…`), and
every failure prints one clear line and exits non-zero.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import typer
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from shared.contract.codec import DecodeError, decode, encode, new_event
from shared.contract.events import (
    EVENT_TYPES,
    HoldReason,
    LegalHoldPlaced,
    LegalHoldPlacedData,
    LegalHoldReleased,
    LegalHoldReleasedData,
)
from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics, make_producer
from shared.plumbing.settings import KafkaSecurity

app = typer.Typer(help="Operate Privacy Plane: events, subjects, jobs, dead letters, holds.")
dlq_app = typer.Typer(help="Dead-lettered messages: list, inspect, replay.")
hold_app = typer.Typer(help="Legal holds: place and release.")
app.add_typer(dlq_app, name="dlq")
app.add_typer(hold_app, name="hold")
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

SOURCE = "privacy-plane.cli"


class CliError(Exception):
    """A failure the operator can act on; printed as one line."""


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(f"PP_{name}") or os.environ.get(name) or default
    if value is None:
        raise CliError(f"set PP_{name} (or {name})")
    return value


def topics() -> Topics:
    return Topics().with_prefix(os.environ.get("PP_TOPIC_PREFIX", ""))


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except MessageSizeTooLargeError as exc:
        err.print(f"[red]error:[/red] the event is larger than the broker accepts: {exc}")
        raise typer.Exit(2) from None
    except (KafkaError, OSError) as exc:
        err.print(f"[red]error:[/red] Kafka at {env('KAFKA_BOOTSTRAP_SERVERS', '?')}: {exc}")
        raise typer.Exit(3) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(3) from None


# --- publishing -------------------------------------------------------------------------

TOPIC_OF_TYPE = {
    "account.": "accounts_lifecycle",
    "subscription.": "accounts_lifecycle",
    "consent.": "consent_changes",
    "processing.": "consent_changes",
    "restriction.": "consent_changes",
    "erasure.": "privacy_requests",
    "export.requested": "privacy_requests",
    "rectification.requested": "privacy_requests",
    "request.": "privacy_requests",
    "legal_hold.": "legal_holds",
    "deletion.": "privacy_receipts",
    "rectification.": "privacy_receipts",
    "export.part": "privacy_receipts",
}


def topic_for(event_type: str) -> str:
    """The contract's inbound topic for an event type (longest matching prefix wins)."""
    for prefix in sorted(TOPIC_OF_TYPE, key=len, reverse=True):
        if event_type.startswith(prefix):
            return str(getattr(topics(), TOPIC_OF_TYPE[prefix]))
    raise CliError(f"no inbound topic for {event_type!r}; pass --topic")


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


def new_event_id() -> str:
    import uuid

    return str(uuid.uuid4())


async def send_all(items: Sequence[tuple[str, bytes | None, bytes | None]], label: str) -> None:
    """Produce (topic, key, value) items with an idempotent producer, with a progress bar."""
    producer = make_producer(
        env("KAFKA_BOOTSTRAP_SERVERS"), KafkaSecurity(), request_timeout_ms=15000
    )
    await producer.start()
    try:
        with Progress(console=err, transient=len(items) < 50) as progress:
            task = progress.add_task(label, total=len(items))
            for topic, key, value in items:
                await (await producer.send(topic, value=value, key=key))
                progress.advance(task)
    finally:
        await producer.stop()


@app.command()
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
        items = [(topic or topic_for(e.type), *encode(e)) for e in events]
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


# --- legal holds --------------------------------------------------------------------------


@hold_app.command("place")
def hold_place(
    hold_id: str,
    reason: HoldReason = typer.Option(..., help="court_order, subpoena, dispute or regulator"),
    subject: str | None = typer.Option(None, help="Hold one subject"),
    account: str | None = typer.Option(None, help="Hold every subject of an account"),
    category: list[str] = typer.Option([], help="Categories held (default: all)"),
) -> None:
    """Place a legal hold: no deletion job is issued for what it covers."""
    key, scope = hold_scope(subject, account)
    data = LegalHoldPlacedData(
        hold_id=hold_id,
        scope=scope,
        account_id=account,
        categories=category or "all",
        reason=reason,
    )
    event = new_event(LegalHoldPlaced, subject=key, source=SOURCE, data=data)
    run(send_all([(topics().legal_holds, *encode(event))], "placing hold"))
    out.print(f"placed hold {hold_id} on {scope} {key} ({reason.value}) id={event.id}")


@hold_app.command("release")
def hold_release(
    hold_id: str,
    subject: str | None = typer.Option(None),
    account: str | None = typer.Option(None),
) -> None:
    """Release a legal hold: what fell due meanwhile is issued."""
    key, scope = hold_scope(subject, account)
    data = LegalHoldReleasedData(hold_id=hold_id, scope=scope, account_id=account)
    event = new_event(LegalHoldReleased, subject=key, source=SOURCE, data=data)
    run(send_all([(topics().legal_holds, *encode(event))], "releasing hold"))
    out.print(f"released hold {hold_id} on {scope} {key} id={event.id}")


def hold_scope(subject: str | None, account: str | None) -> tuple[str, Any]:
    if bool(subject) == bool(account):
        err.print("[red]error:[/red] give exactly one of --subject or --account")
        raise typer.Exit(2)
    return (subject, "subject") if subject else (str(account), "account")


# --- dead letters -------------------------------------------------------------------------


async def read_deadletters(limit: int | None = None) -> list[Any]:
    """Every dead-lettered record from the start of the topic (no consumer group)."""
    consumer = AIOKafkaConsumer(
        topics().deadletter,
        bootstrap_servers=env("KAFKA_BOOTSTRAP_SERVERS"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **KafkaSecurity().client_kwargs(),
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
    return {k: v.decode(errors="replace") for k, v in (record.headers or [])}


@dlq_app.command("list")
def dlq_list(limit: int = typer.Option(50, help="At most this many")) -> None:
    """List dead-lettered messages with their origin and reason."""
    records = run(read_deadletters(limit))
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


@dlq_app.command("show")
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


@dlq_app.command("replay")
def dlq_replay(
    position: list[str] = typer.Argument(None, help="partition:offset (default: all)"),
    service: str | None = typer.Option(None, help="Only those this service dead-lettered"),
) -> None:
    """Send dead-lettered messages back to their original topic (after a fix)."""
    records = run(read_deadletters())
    if position:
        records = [find_record(records, p) for p in position]
    if service:
        records = [r for r in records if headers_of(r).get("service") == service]
    items = [(headers_of(r)["original_topic"], r.key, r.value) for r in records]
    run(send_all(items, "replaying"))
    out.print(f"replayed {len(items)} message(s) to their original topics")


# --- topics -------------------------------------------------------------------------------


@app.command("topics")
def create_topics(partitions: int = typer.Option(6), replication: int = typer.Option(1)) -> None:
    """Create every contract topic that is missing (compaction and retention per DESIGN §5)."""
    policy = TopicPolicy(partitions=partitions, replication=replication)
    created = run(ensure_topics(env("KAFKA_BOOTSTRAP_SERVERS"), topics(), policy, KafkaSecurity()))
    out.print(f"created {len(created)} topic(s): {', '.join(created) or '(all existed)'}")


# --- the services' read APIs --------------------------------------------------------------

SERVICES = {"consent": "8001", "retention": "8002", "export": "8003"}


def api(service: str, path: str, **params: Any) -> Any:
    """GET a service API path with the bearer token; raise CliError on failure."""
    base = env(f"{service.upper()}_URL", f"http://127.0.0.1:{SERVICES[service]}")
    headers = {"Authorization": f"Bearer {env('API_TOKEN')}"}
    query = {k: v for k, v in params.items() if v is not None}
    try:
        response = httpx.get(f"{base}{path}", params=query, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise CliError(f"{service} at {base} is not answering: {exc}") from None
    if response.status_code >= 400:
        raise CliError(f"{service} {path}: {response.status_code} {response.text[:300]}")
    return response.json()


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def subject(subject_id: str) -> None:
    """Everything about one subject: consent, ledger, retention schedule, jobs, requests."""
    consent = call(api, "consent", f"/v1/subjects/{subject_id}/consent")
    history = call(api, "consent", f"/v1/subjects/{subject_id}/consent/history", limit=20)
    retention = call(api, "retention", f"/v1/subjects/{subject_id}/retention")
    out.rule(f"[bold]{subject_id}[/bold] — consent")
    out.print_json(json.dumps(consent, default=str))
    out.rule("ledger (latest 20)")
    out.print_json(json.dumps(history, default=str))
    out.rule("retention: schedule, holds, jobs, certificates")
    out.print_json(json.dumps(retention, default=str))


@app.command()
def overdue(
    days: int = typer.Option(7, help="Requests whose deadline is within this many days"),
) -> None:
    """Overdue jobs, and requests past or near their deadline."""
    jobs = call(api, "retention", "/v1/jobs", overdue="true")["jobs"]
    requests = call(api, "retention", "/v1/requests", due_within_days=days)["requests"]
    table = Table(
        "job", "subject", "owner", "category", "mode", "status", "due by", title="overdue jobs"
    )
    for j in jobs:
        table.add_row(
            str(j.get("job_id")), str(j.get("subject_id")), str(j.get("owner")),
            str(j.get("category")), str(j.get("mode")), str(j.get("status")), str(j.get("due_by")),
        )  # fmt: skip
    out.print(table)
    near = Table(
        "request",
        "subject",
        "kind",
        "status",
        "deadline",
        "overdue",
        title=f"requests due within {days} days",
    )
    for r in requests:
        near.add_row(
            str(r["request_id"]), str(r["subject_id"]), str(r["kind"]), str(r["status"]),
            str(r["deadline"]), "yes" if r["overdue"] else "",
        )  # fmt: skip
    out.print(near)
    out.print(f"{len(jobs)} overdue job(s), {len(requests)} request(s) due within {days} days")


@app.command("dry-run")
def dry_run(
    at: datetime = typer.Option(..., help="The date to evaluate, e.g. 2027-03-01"),
    subject_id: str | None = typer.Option(None, "--subject", help="One subject (default: all)"),
) -> None:
    """What retention would delete or restrict on a date, and why (no side effects)."""
    when = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
    if not subject_id:
        result = call(api, "retention", "/v1/retention/dry-run", at=when)
        out.print_json(json.dumps(result, default=str))
        return
    result = call(api, "retention", f"/v1/subjects/{subject_id}/retention", at=when)
    table = Table("category", "owner", "on " + when[:10], "why", "due", "held by")
    for row in result.get("dry_run", []):
        table.add_row(
            row["category"], row["owner"], row["action"], row["reason"],
            str(row.get("due_at") or ""), ", ".join(row.get("hold_ids") or []),
        )  # fmt: skip
    out.print(table)


@app.command("verify-ledger")
def verify_ledger(subject_id: str) -> None:
    """Verify a subject's consent ledger hash chain (exit 1 if it was tampered with)."""
    result = call(api, "consent", f"/v1/subjects/{subject_id}/consent/history/verify")
    if result.get("ok"):
        out.print(
            f"[green]ledger of {subject_id} verifies[/green]: {result.get('checked')} entries"
        )
        return
    err.print(
        f"[red]ledger of {subject_id} does NOT verify[/red] at entry {result.get('broken_at')}: "
        f"{result.get('reason')}"
    )
    raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {exc.errors()[0]['msg']}")
        sys.exit(2)
