"""The consent ingest's full-work baseline: the service's reads, rows, outbox and publishing,
with none of its model, decisions or plumbing (`python -m bench.baselines ingest-full …`).

Per batch, in one transaction: the inbox claim, the service's one batch read
(`SELECT_BATCH_CONTEXT`: states and ledger heads), the ledger COPY, the subjects and ledger
heads upserts, and one outbox row packing a `consent.state.v1` per event (encoded with
`encode_envelope`, written with `outbox.write`, whose NOTIFY wakes the relay). The real
`Relay`, transactional as the service's, publishes and deletes the outbox rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.consent.app import MIGRATIONS as CONSENT_MIGRATIONS
from services.consent.context import SOURCE, STATE_HEADERS, STATE_TYPE
from services.consent.settings import ConsentSettings
from services.consent.store import LEDGER_COPY_ORDER, SELECT_BATCH_CONTEXT, UPSERT_HEADS
from services.consent.store import UPSERT_STATES as UPSERT_SUBJECTS
from shared.contract.codec import encode_envelope
from shared.plumbing import db, outbox
from shared.plumbing.kafka import make_producer
from shared.plumbing.keyring import LEGACY_KID
from shared.plumbing.pipeline import CLAIM as CLAIM_INBOX
from shared.plumbing.relay import Relay

LEDGER_KEY = b"bench-baseline-ledger-key"


def say(**fields: Any) -> None:
    print(orjson.dumps(fields).decode(), flush=True)


def relay_for(args: dict[str, Any]) -> Relay:
    """The real relay on the baseline's schema, with a transactional producer per tenure and
    the service's batch size and compression."""
    fields = ConsentSettings.model_fields

    def new_producer() -> AIOKafkaProducer:
        return make_producer(
            args["kafka"],
            None,
            fields["kafka_compression"].default,
            transactional_id=f"bench-baseline-{args['schema']}",
        )

    return Relay(
        args["dsn"],
        args["schema"],
        new_producer(),
        service="bench-baseline",
        batch_size=fields["relay_batch_size"].default,
        new_producer=new_producer,
    )


async def ingest_full(args: dict[str, Any]) -> None:
    """Consume consent changes until SIGTERM, doing per batch what the service's rows and
    outbox need (reads included), while the relay publishes; drains the relay at the end."""
    conn = await asyncpg.connect(args["dsn"])
    await db.migrate(conn, args["schema"], CONSENT_MIGRATIONS)
    await conn.execute(f'SET search_path TO "{args["schema"]}"')
    relay = relay_for(args)
    relay_stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(relay_stop))
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
    count, last = 0, time.time()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        say(ready=time.time())
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=args.get("batch", 2000))
            records = [r.value for part in batch.values() for r in part if r.value]
            if not records:
                continue
            await write_full(conn, records, args["schema"], args["state_topic"])
            await consumer.commit()
            count += len(records)
            last = time.time()
    finally:
        relay_stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relaying, 60)
        await consumer.stop()
        await conn.close()
    say(done=last, count=count)


async def write_full(
    conn: asyncpg.Connection, values: list[bytes], schema: str, topic: str
) -> None:
    """One batch as the service writes it: claim, read states and heads, then ledger, subjects,
    heads and the packed outbox row of one state per event."""
    now = datetime.now(UTC)
    events = [orjson.loads(v) for v in values]
    subjects = list(dict.fromkeys(e["subject"] for e in events))
    principals = [hmac.new(LEDGER_KEY, s.encode(), "sha256").hexdigest() for s in subjects]
    principal_of = dict(zip(subjects, principals, strict=True))
    async with conn.transaction():
        await conn.fetch(
            CLAIM_INBOX,
            [e["source"] for e in events],
            [e["id"] for e in events],
            [hashlib.sha256(v).digest() for v in values],
            [e["type"] for e in events],
        )
        docs: dict[str, dict[str, Any]] = {}
        versions: dict[str, int] = {}
        heads: dict[str, tuple[int, str, bytes]] = {}
        for r in await conn.fetch(SELECT_BATCH_CONTEXT, subjects, principals):
            s = r["subject_id"]
            docs[s] = orjson.loads(r["doc"]) if r["doc"] is not None else {"purposes": {}}
            versions[s] = r["version"] or 0
            salt = bytes(r["salt"]) if r["salt"] is not None else os.urandom(16)
            heads[s] = (r["seq"] or 0, r["hash"] or "", salt)
        ledger, rows = [], []
        for value, e in zip(values, events, strict=True):
            s, data, purpose = e["subject"], e["data"], e["data"]["purpose"]
            purposes = docs[s]["purposes"]
            old = purposes.get(purpose, {}).get("state", "none")
            new = "granted" if e["type"] == "consent.granted.v1" else "withdrawn"
            purposes[purpose] = {
                "state": new,
                "since": e["time"],
                "event_id": e["id"],
                "consent_type": data.get("consent_type"),
                "source": data.get("source"),
                "policy_version": data.get("policy_version"),
                "expires_at": None,
            }
            seq, prev, salt = heads[s]
            digest = hashlib.sha256(prev.encode() + value).hexdigest()
            heads[s] = (seq + 1, digest, salt)
            versions[s] += 1
            ledger.append(
                (principal_of[s], seq + 1, e["id"], e["source"], e["type"], "consent", purpose,
                 old, new, True, None, data.get("source"), data.get("consent_type"),
                 data.get("policy_version"), data.get("notice_id"), data.get("jurisdiction"),
                 None, datetime.fromisoformat(e["time"]), now,
                 hashlib.sha256(salt + s.encode()).hexdigest(), prev, digest, s, LEGACY_KID, None)
            )  # fmt: skip
            event_id = f"consent-state:{s}:{versions[s]}"
            state = encode_envelope(
                event_id=event_id,
                source=SOURCE,
                event_type=STATE_TYPE,
                subject=s,
                time=e["time"],
                data={"subject": s, "version": versions[s], "purposes": purposes},
            )
            rows.append(outbox.OutboxRow(topic, s.encode(), state, STATE_HEADERS, event_id))
        await conn.copy_records_to_table("ledger", records=ledger, columns=LEDGER_COPY_ORDER)
        await conn.execute(
            UPSERT_SUBJECTS,
            subjects,
            [versions[s] for s in subjects],
            [orjson.dumps(docs[s]).decode() for s in subjects],
            [None] * len(subjects),
            now,
        )
        await conn.execute(
            UPSERT_HEADS,
            principals,
            [heads[s][0] for s in subjects],
            [heads[s][1] for s in subjects],
            [heads[s][2] for s in subjects],
        )
        await outbox.write(conn, rows, schema)
