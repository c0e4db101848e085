"""The raw ceilings, each run in its own process: `python -m bench.baselines <name> '<json>'`.

Each prints JSON lines: `{"ready": …}` once it can take work, then `{"done": …}` with figures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import sys
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

from bench.harness import producer, status_kb
from bench.stats import percentile
from bench.workload import export_records
from services.consent.app import MIGRATIONS as CONSENT_MIGRATIONS
from services.consent.store import LEDGER_COPY_ORDER, UPSERT_HEADS
from services.consent.store import UPSERT_STATES as UPSERT_SUBJECTS
from shared.plumbing import db
from shared.plumbing.keyring import LEGACY_KID
from shared.plumbing.pipeline import CLAIM as CLAIM_INBOX

LEDGER_KEY = b"bench-baseline-ledger-key"

INGEST_TABLES = """
CREATE TABLE inbox (source text, event_id text, PRIMARY KEY (source, event_id));
CREATE TABLE ledger (subject text, event_id text, type text, purpose text, at timestamptz,
                     body jsonb);
CREATE TABLE state (subject text, purpose text, state text, since timestamptz,
                    PRIMARY KEY (subject, purpose));
"""
INBOX = """
INSERT INTO inbox SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING
"""
UPSERT_STATE = """
INSERT INTO state SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
ON CONFLICT (subject, purpose) DO UPDATE SET state = excluded.state, since = excluded.since
WHERE state.since <= excluded.since
"""


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def ingest(args: dict[str, Any]) -> None:
    """Bare consumer: read consent changes and write rows in batches; no outbox, publishes
    nothing, keeps its state in memory (the full-work baseline is `bench.baseline_full`).

    `rows` "same": the consent service's own tables (its migrations) and statements, one row
    per event in inbox, ledger, ledger heads and subjects, as the service writes them. "slim":
    three narrow tables (inbox, a six-column ledger, one state row per subject and purpose).
    """
    conn = await asyncpg.connect(args["dsn"])
    same = args.get("rows", "slim") == "same"
    if same:
        await db.migrate(conn, args["schema"], CONSENT_MIGRATIONS)
        await conn.execute(f'SET search_path TO "{args["schema"]}"')
        people: dict[str, Person] = {}
    else:
        await conn.execute(f'CREATE SCHEMA "{args["schema"]}"')
        await conn.execute(f'SET search_path TO "{args["schema"]}"')
        await conn.execute(INGEST_TABLES)
    consumer = AIOKafkaConsumer(
        args["topic"],
        bootstrap_servers=args["kafka"],
        group_id=f"bench-baseline-{args['schema']}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    stop = asyncio.Event()  # one of several processes in the group: SIGTERM says all is done
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        say(ready=time.time())
        count, expect, last = 0, args.get("expect"), time.time()
        while not stop.is_set() and (expect is None or count < expect):
            batch = await consumer.getmany(timeout_ms=100, max_records=args.get("batch", 2000))
            records = [r for part in batch.values() for r in part]
            if not records:
                continue
            if same:
                await write_same_rows(conn, [r.value for r in records if r.value], people)
            else:
                await write_batch(conn, [orjson.loads(r.value) for r in records])
            await consumer.commit()
            count += len(records)
            last = time.time()
        say(done=last, count=count)
    finally:
        await consumer.stop()
        await conn.close()


async def write_batch(conn: asyncpg.Connection, events: list[dict[str, Any]]) -> None:
    latest: dict[tuple[str, str], tuple[str, datetime]] = {}
    ledger = []
    for e in events:
        at = datetime.fromisoformat(e["time"])
        purpose = e["data"]["purpose"]
        state = "granted" if e["type"] == "consent.granted.v1" else "withdrawn"
        ledger.append((e["subject"], e["id"], e["type"], purpose, at, orjson.dumps(e).decode()))
        latest[(e["subject"], purpose)] = (state, at)
    async with conn.transaction():
        await conn.execute(INBOX, [e["source"] for e in events], [e["id"] for e in events])
        await conn.copy_records_to_table("ledger", records=ledger)
        keys = list(latest)
        await conn.execute(
            UPSERT_STATE,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [latest[k][0] for k in keys],
            [latest[k][1] for k in keys],
        )


@dataclass
class Person:
    """What the same-rows baseline keeps per subject to write its rows (no decisions)."""

    principal: str
    salt: bytes
    purposes: dict[str, dict[str, Any]] = field(default_factory=dict)
    seq: int = 0
    hash: str = ""


async def write_same_rows(
    conn: asyncpg.Connection, values: list[bytes], people: dict[str, Person]
) -> None:
    """The rows the consent service writes for these events, with its statements: inbox claim,
    ledger COPY, subjects upsert, ledger heads upsert (each row's values computed plainly)."""
    now = datetime.now(UTC)
    inbox: tuple[list[str], list[str], list[bytes], list[str]] = ([], [], [], [])
    ledger = []
    touched: dict[str, Person] = {}
    for value in values:
        e = orjson.loads(value)
        subject, data = e["subject"], e["data"]
        inbox[0].append(e["source"])
        inbox[1].append(e["id"])
        inbox[2].append(hashlib.sha256(value).digest())
        inbox[3].append(e["type"])
        person = people.get(subject)
        if person is None:
            principal = hmac.new(LEDGER_KEY, subject.encode(), "sha256").hexdigest()
            person = people[subject] = Person(principal, os.urandom(16))
        purpose = data["purpose"]
        old = person.purposes.get(purpose, {}).get("state", "none")
        new = "granted" if e["type"] == "consent.granted.v1" else "withdrawn"
        person.purposes[purpose] = {
            "state": new,
            "since": e["time"],
            "event_id": e["id"],
            "consent_type": data.get("consent_type"),
            "source": data.get("source"),
            "policy_version": data.get("policy_version"),
            "expires_at": None,
        }
        prev = person.hash
        person.hash = hashlib.sha256(prev.encode() + value).hexdigest()
        person.seq += 1
        digest = hashlib.sha256(person.salt + subject.encode()).hexdigest()
        at = datetime.fromisoformat(e["time"])
        ledger.append(
            (person.principal, person.seq, e["id"], e["source"], e["type"], "consent", purpose,
             old, new, True, None, data.get("source"), data.get("consent_type"),
             data.get("policy_version"), data.get("notice_id"), data.get("jurisdiction"), None,
             at, now, digest, prev, person.hash, subject, LEGACY_KID, None)
        )  # fmt: skip
        touched[subject] = person
    subjects = sorted(touched)
    async with conn.transaction():
        await conn.fetch(CLAIM_INBOX, *inbox)
        await conn.copy_records_to_table("ledger", records=ledger, columns=LEDGER_COPY_ORDER)
        await conn.execute(
            UPSERT_SUBJECTS,
            subjects,
            [touched[s].seq for s in subjects],
            [orjson.dumps({"purposes": touched[s].purposes}).decode() for s in subjects],
            [None] * len(subjects),
            now,
        )
        await conn.execute(
            UPSERT_HEADS,
            [touched[s].principal for s in subjects],
            [touched[s].seq for s in subjects],
            [touched[s].hash for s in subjects],
            [touched[s].salt for s in subjects],
        )


TIMER_TABLE = """
CREATE TABLE timers (id bigserial PRIMARY KEY, subject_id text NOT NULL, category text NOT NULL,
  owner text NOT NULL, due_at timestamptz NOT NULL, status text NOT NULL DEFAULT 'pending');
CREATE INDEX timers_due ON timers (due_at) WHERE status = 'pending';
"""
CLAIM = """
UPDATE timers SET status = 'fired' WHERE id IN (
  SELECT id FROM timers WHERE status = 'pending' AND due_at <= now()
  ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, subject_id, category, owner, due_at
"""


async def timers(args: dict[str, Any]) -> None:
    """Raw ceiling of the timer loop: claim a batch with SKIP LOCKED, produce it, commit.

    `steady` > 0: timers fall due at that many per second for `count / steady` seconds, the
    loop polls every 0.1 s like the service, and the delays from due time to send are reported.
    """
    conn = await asyncpg.connect(args["dsn"])
    await conn.execute(f'CREATE SCHEMA "{args["schema"]}"')
    await conn.execute(f'SET search_path TO "{args["schema"]}"')
    await conn.execute(TIMER_TABLE)
    total, steady = args["count"], args.get("steady", 0)
    start = datetime.now(UTC) + timedelta(seconds=3 if steady else -1)
    rows = (
        (f"bsub_{i:07d}", "crm_data", "crm", start + timedelta(seconds=i / steady if steady else 0))
        for i in range(total)
    )
    await conn.copy_records_to_table(
        "timers", records=rows, columns=["subject_id", "category", "owner", "due_at"]
    )
    await conn.execute("ANALYZE timers")
    say(ready=time.time())
    started = time.perf_counter()
    claimed_s = produced_s = 0.0
    issued = 0
    delays: list[float] = []
    async with producer(args["kafka"]) as prod:
        while issued < total:
            t0 = time.perf_counter()
            async with conn.transaction():
                batch = await conn.fetch(CLAIM, args.get("batch", 1000))
                t1 = time.perf_counter()
                futures = []
                for r in batch:
                    value = {"job_id": f"j{r['id']}", "owner": r["owner"], "cat": r["category"]}
                    futures.append(
                        await prod.send(
                            args["topic"], key=r["subject_id"].encode(), value=orjson.dumps(value)
                        )
                    )
                    if steady:
                        delays.append((datetime.now(UTC) - r["due_at"]).total_seconds() * 1000)
                await asyncio.gather(*futures)
                t2 = time.perf_counter()
            claimed_s += t1 - t0
            produced_s += t2 - t1
            issued += len(batch)
            if len(batch) < args.get("batch", 1000):
                await asyncio.sleep(0.1 if steady else 0)
    elapsed = time.perf_counter() - started
    say(
        done=time.time(),
        count=issued,
        seconds=elapsed,
        claim_rate=issued / claimed_s if claimed_s else None,
        produce_rate=issued / produced_s if produced_s else None,
        p50_ms=percentile(delays, 50) if delays else None,
        p99_ms=percentile(delays, 99) if delays else None,
    )
    await conn.close()


def export(args: dict[str, Any]) -> None:
    """Raw ceiling of assembly: the same records straight into a zip with a manifest."""
    parts = export_records(args["count"])
    say(ready=time.time())
    started = time.perf_counter()
    manifest: dict[str, Any] = {"request_id": "bench", "subject": "bsub_export", "parts": []}
    with zipfile.ZipFile(args["path"], "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for (owner, category), records in parts.items():
            body = orjson.dumps(records)
            name = f"{owner}/{category}.json"
            bundle.writestr(name, body)
            manifest["parts"].append(
                {
                    "file": name,
                    "records": len(records),
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
            )
        bundle.writestr("manifest.json", orjson.dumps(manifest))
    seconds = time.perf_counter() - started
    peak = status_kb_self()
    say(done=time.time(), seconds=seconds, peak_mb=peak / 1024 if peak else None)


def status_kb_self() -> int | None:
    import os

    return status_kb(os.getpid(), "VmHWM")


def main() -> None:
    name, raw = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}"
    args = json.loads(raw)
    if name == "ingest":
        asyncio.run(ingest(args))
    elif name == "ingest-full":
        from bench.baseline_full import ingest_full

        asyncio.run(ingest_full(args))
    elif name == "timers":
        asyncio.run(timers(args))
    elif name == "export":
        export(args)
    else:
        raise SystemExit(f"unknown baseline {name!r}")


if __name__ == "__main__":
    main()
