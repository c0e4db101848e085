"""Erasure reaches everything Privacy Plane holds (issue 21 item 4, DESIGN §5).

The three services on real Kafka and PostgreSQL take one person's distinctive personal values
(consent evidence, export parts from owners inline and through the exchange folder, a
rectification), export them, then erase the person. The logical scan then reads every topic from
offset zero, every table of the three schemas and every stored and exchange file: a value may
remain only where DESIGN §5 says, on a topic with bounded retention, until it ages out.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.consent.app import build_runtime as consent_runtime
from services.consent.settings import ConsentSettings
from services.export.app import build_runtime as export_runtime
from services.export.settings import CONSENT_OWNER, ExportSettings
from services.retention.app import build_runtime as retention_runtime
from services.retention.settings import RetentionSettings
from shared.contract.codec import decode, new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import (
    DeletionJob,
    Evidence,
    ExportJob,
    RectificationJob,
    RectificationRequested,
    RectificationRequestedData,
    RequestStatusChanged,
)
from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy
from shared.plumbing.service import Runtime
from tests.integration.erasure.scan import Finding, scan_files, scan_tables, scan_topics
from tests.integration.export.harness import inline_parts, open_zip, reference_part
from tests.support import events as make
from tests.support.infra import Infra
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration

TOKEN = "erasure-scan-token-0123"
ALLOWED = {
    # DESIGN §5: consent evidence rides consent.changes (bounded: 35 days by default)
    ("user_agent", "consent.changes"),
    ("ip_hash", "consent.changes"),
    ("tcf_string", "consent.changes"),
    # a rectification's corrected values: the request, and the job that is their purpose
    ("rectified_email", "privacy.requests"),
    ("rectified_email", "privacy.jobs"),
}
"""(value, topic without prefix) pairs that may remain, each on a topic with bounded retention."""


@dataclass
class Plane:
    infra: Infra
    topics: Topics
    schemas: dict[str, str]
    folders: list[Path]
    exchange: Path
    export_http: httpx.AsyncClient

    async def send(self, topic: str, *events: CloudEvent[Any]) -> None:
        await produce(self.infra.kafka, topic, events)

    async def wait_for(self, topic: str, found: Callable[[Any], bool]) -> list[Any]:
        """The decoded events of `topic` once one of them satisfies `found`."""

        def events(records: list[Any]) -> list[Any]:
            return [decode(r.value) for r in records if r.value is not None]

        records = await read_topic(
            self.infra.kafka, topic, until=lambda rs: any(found(e) for e in events(rs))
        )
        seen = events(records)
        assert any(found(e) for e in seen), f"nothing expected on {topic}"
        return seen

    async def poll(self, query: str, until: Callable[[Any], bool], within: float = 30) -> Any:
        conn = await asyncpg.connect(self.infra.database_url)
        try:
            deadline = time.monotonic() + within
            while True:
                value = await conn.fetchval(query)
                if until(value) or time.monotonic() > deadline:
                    return value
                await asyncio.sleep(0.1)
        finally:
            await conn.close()


@pytest.fixture
async def plane(infra: Infra, topics: Topics, test_id: str, tmp_path: Path) -> AsyncIterator[Plane]:
    """Consent, retention and export on one private topic set, each with its own schema."""
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka,
        "database_url": infra.database_url,
        "topics": topics,
        "api_token": TOKEN,
        "batch_timeout_ms": 20,
    }
    schemas = {s: f"t_{test_id}_{s[0]}" for s in ("consent", "retention", "export")}
    storage, exchange = tmp_path / "storage", tmp_path / "exchange"
    runtimes: list[Runtime[Any]] = [
        consent_runtime(
            ConsentSettings(
                **common,
                db_schema=schemas["consent"],
                group_id=f"g-{test_id}-c",
                ledger_key="erasure-scan-ledger-key",
            )
        ),
        retention_runtime(
            RetentionSettings(**common, db_schema=schemas["retention"], group_id=f"g-{test_id}-r")
        ),
        export_runtime(
            ExportSettings(
                **common,
                db_schema=schemas["export"],
                group_id=f"g-{test_id}-e",
                service_key=base64.b64encode(bytes(range(32))).decode(),
                link_secret="erasure-scan-link-secret-0123456789",
                storage_dir=storage,
                exchange_dir=exchange,
                loop_interval=0.1,
            )
        ),
    ]
    for runtime in runtimes:
        await runtime.start()
    transport = httpx.ASGITransport(app=runtimes[2].asgi())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://export", headers=headers
        ) as http:
            yield Plane(infra, topics, schemas, [storage, exchange], exchange, http)
    finally:
        for runtime in reversed(runtimes):
            await runtime.stop()
        conn = await asyncpg.connect(infra.database_url)
        try:
            for schema in schemas.values():
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def export_everything(plane: Plane, subject: str, values: dict[str, str]) -> bytes:
    """An export answered by every owner (crm inline, support by an exchange file); the
    bundle as downloaded."""
    t = plane.topics
    await plane.send(t.privacy_requests, make.export_requested(subject, f"exp_{subject}"))
    events = await plane.wait_for(
        t.privacy_jobs,
        lambda e: isinstance(e, ExportJob) and e.subject == subject and e.data.owner == "support",
    )
    jobs = {e.data.owner: e for e in events if isinstance(e, ExportJob) and e.subject == subject}
    answers: list[CloudEvent[Any]] = []
    for owner, job in sorted(jobs.items()):
        if owner == CONSENT_OWNER:
            continue  # the consent service answers its own job (the ledger, sealed)
        for category in job.data.categories:
            if category == "crm_data":
                answers += inline_parts(job, category, [{"note": values["crm_note"]}])
            elif category == "support_communications":
                records = [{"body": values["support_ticket"]}]
                answers.append(reference_part(job, category, records, plane.exchange))
            else:
                answers += inline_parts(job, category, [])
    await plane.send(t.privacy_receipts, *answers)
    await plane.wait_for(
        t.requests_status,
        lambda e: (
            isinstance(e, RequestStatusChanged)
            and e.data.request_id == f"exp_{subject}"
            and e.data.status.value == "completed"
        ),
    )
    view = (await plane.export_http.get(f"/v1/exports/exp_{subject}")).json()
    url = httpx.URL(view["download_url"])
    download = await plane.export_http.get(url.path, params=dict(url.params))
    assert download.status_code == 200, download.text
    return download.content


async def test_after_an_erasure_personal_values_remain_only_in_bounded_topic_windows(
    plane: Plane, capsys: pytest.CaptureFixture[str]
):
    token = uuid.uuid4().hex[:12]
    subject = f"usr_scan_{token}"
    values = {
        "user_agent": f"ScanAgent/{token}",
        "ip_hash": f"iphash-{token}",
        "tcf_string": f"CPscan{token}TCF",
        "crm_note": f"crm-note-{token}",
        "support_ticket": f"ticket-body-{token}",
        "rectified_email": f"rectified-{token}@example.org",
    }
    t = plane.topics
    evidence = Evidence(
        user_agent=values["user_agent"], ip_hash=values["ip_hash"],
        tcf_string=values["tcf_string"],
    )  # fmt: skip
    await plane.send(t.accounts_lifecycle, make.signed_up(subject, f"acc_{token}"))
    await plane.send(
        t.consent_changes, make.granted(subject, "analytics_cookies", evidence=evidence)
    )

    bundle = await export_everything(plane, subject, values)
    archive, _ = open_zip(bundle)
    everything = b"".join(archive.read(name) for name in archive.namelist())
    for name in ("crm_note", "support_ticket", "user_agent", "tcf_string"):
        assert values[name].encode() in everything, name  # the export carried each value

    rectification = new_event(
        RectificationRequested,
        subject=subject,
        source="portal",
        data=RectificationRequestedData(
            request_id=f"rect_{token}",
            category="crm_data",
            fields={"email": values["rectified_email"]},
        ),
    )
    await plane.send(t.privacy_requests, rectification)
    await plane.wait_for(t.privacy_jobs, lambda e: isinstance(e, RectificationJob))

    erasure = make.erasure(subject, f"era_{token}", verified_by="portal", source="portal")
    await plane.send(t.privacy_requests, erasure)
    await plane.wait_for(
        t.privacy_jobs, lambda e: isinstance(e, DeletionJob) and e.subject == subject
    )
    export_schema, consent_schema = plane.schemas["export"], plane.schemas["consent"]
    deleted = await plane.poll(
        f'SELECT count(*) FROM "{export_schema}".requests WHERE bundle_deleted_at IS NULL',
        until=lambda n: n == 0,
    )
    assert deleted == 0
    subjects = await plane.poll(
        f'SELECT count(*) FROM "{consent_schema}".subjects', until=lambda n: n == 0
    )
    assert subjects == 0
    queued = await plane.poll(
        f'SELECT count(*) FROM "{export_schema}".exchange_deletions', until=lambda n: n == 0
    )
    assert queued == 0

    for schema in plane.schemas.values():  # compressed rows the text scan could not read
        left = await plane.poll(f'SELECT count(*) FROM "{schema}".outbox', until=lambda n: n == 0)
        assert left == 0, f"{schema}: outbox not yet published"

    findings = await scan_topics(plane.infra.kafka, t, TopicPolicy(), values)
    conn = await asyncpg.connect(plane.infra.database_url)
    try:
        findings += await scan_tables(conn, plane.schemas.values(), values)
    finally:
        await conn.close()
    findings += scan_files(plane.folders, values)

    prefix = t.consent_changes.removesuffix(Topics().consent_changes)

    def allowed(f: Finding) -> bool:
        where = f.where.removeprefix("topic:").removeprefix(prefix)
        return (f.value, where) in ALLOWED and f.window != "kept"

    with capsys.disabled():
        print("\nwhere the erased person's values still live (DESIGN §5 windows):")
        for f in findings:
            print(
                f"  {f.value:16} {f.where:48} {f.window}{'' if allowed(f) else '  <- NOT ALLOWED'}"
            )
    assert [f for f in findings if not allowed(f)] == []
    # the evidence is still in its bounded window: the scan does read that topic
    assert any(f.value == "user_agent" for f in findings)
