"""The export service on real Kafka and PostgreSQL, with data owners simulated by the test."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from nacl.exceptions import CryptoError

from services.export import links
from services.export.app import build_runtime
from services.export.domain import deadline_for
from services.export.settings import default_owners
from shared.contract.codec import decode, new_event
from shared.contract.events import (
    ExportPart,
    ExportPartFailed,
    ExportPartFailedData,
)
from shared.contract.sealing import open_sealed
from shared.plumbing.clock import ManualClock
from tests.integration.export.harness import (
    Harness,
    inline_parts,
    open_zip,
    part_event,
    records_for,
    reference_part,
    settings_for,
)
from tests.support import events as make
from tests.support.kafka import produce, read_topic

pytestmark = pytest.mark.integration

OWNERS = default_owners()


@pytest.fixture
async def export(infra, topics, schema, tmp_path: Path) -> AsyncIterator[Harness]:
    clock = ManualClock()
    settings = settings_for(infra, topics, schema, tmp_path)
    runtime = build_runtime(settings, clock)
    await runtime.start()
    transport = httpx.ASGITransport(app=runtime.asgi())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://export") as client:
            yield Harness(infra, topics, schema, settings, clock, runtime, client)
    finally:
        await runtime.stop()


async def test_a_request_answered_by_every_owner_gives_one_bundle_matching_what_they_sent(
    export: Harness,
):
    subject, request_id = "usr_42", "req_all"
    await export.request_export(subject, request_id)
    jobs = await export.jobs(request_id, len(OWNERS))
    assert {o: j.data.categories for o, j in jobs.items()} == OWNERS
    assert {j.data.due_by for j in jobs.values()} == {deadline_for(export.clock.now())}
    assert len({j.data.public_key for j in jobs.values()}) == 1

    sent: dict[tuple[str, str], list[dict[str, object]]] = {}
    events: list[ExportPart] = []
    for owner, job in sorted(jobs.items()):
        for category in job.data.categories:
            count = {"crm": 3000, "support": 0}.get(owner, 5)  # crm: several chunks; support: none
            records = records_for(owner, category, count)
            sent[owner, category] = records
            if owner == "billing":
                events.append(reference_part(job, category, records, export.exchange))
            else:
                events.extend(inline_parts(job, category, records, max_bytes=64 * 1024))
    crm_parts = [e for e in events if e.data.owner == "crm"]
    assert len(crm_parts) > 2
    # Duplicates: the same event twice, and the same part again under a new event id.
    resent = crm_parts[1].model_copy(update={"id": "resent-part-1"})
    await export.send(*events[:-1], crm_parts[0], resent)
    key_while_open = await export.private_key(request_id)
    await export.wait_status(request_id, "in_progress")
    await export.send(events[-1])

    done = await export.wait_status(request_id, "completed")
    assert done.data.bundle_id
    assert done.data.bundle_expires_at
    assert "http" not in done.model_dump_json()
    assert "sig" not in done.model_dump_json()
    statuses = await export.statuses(request_id, lambda found: len(found) >= 3)
    assert [s.data.status.value for s in statuses] == ["pending", "in_progress", "completed"]
    stored = await export.db("SELECT count(*) AS n FROM parts WHERE request_id = $1", request_id)
    assert stored[0]["n"] == len(events)

    # The portal gets a signed link with its token; the download needs no token.
    unauthorised = await export.http.get(f"/v1/exports/{request_id}")
    assert unauthorised.status_code == 401
    view = await export.export_view(request_id)
    assert view["status"] == "completed"
    assert view["bundle_id"] == done.data.bundle_id
    download = await export.http.get(view["download_url"])
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/zip"

    archive, manifest = open_zip(download.content)
    assert manifest["request_id"] == request_id
    assert manifest["subject"] == subject
    assert manifest["format_version"] == "1"
    assert manifest["generated_at"]
    assert manifest["not_included"] == []
    files = {(f["owner"], f["category"]): f for f in manifest["files"]}
    assert set(files) == set(sent)
    for (owner, category), records in sent.items():
        entry = files[owner, category]
        content = archive.read(entry["path"])
        assert hashlib.sha256(content).hexdigest() == entry["sha256"]
        assert json.loads(content) == records
        assert entry["record_count"] == len(records)
        assert entry["schema"]
        owner_parts = [e for e in events if e.data.owner == owner]
        assert [p["sha256"] for p in entry["parts"]] == [e.data.sha256 for e in owner_parts]
    information = json.loads(archive.read("information.json"))["categories"]
    assert information["billing_records"]["retention"].endswith("legal obligation (tax)")
    # the register's recipients, not the owning service (policy 3.1)
    assert [r["name"] for r in information["crm_data"]["recipients"]] == ["CRM hosting provider"]
    assert information["crm_data"]["source"] == "entered by the customer's users"
    assert {p["purpose"] for p in information["usage_data"]["purposes"]} >= {"analytics_cookies"}
    assert "consent_records" in information

    # Crypto-shredding: while open, the key opened the parts; now nothing can.
    assert key_while_open is not None
    receipts = await read_topic(
        export.infra.kafka, export.topics.privacy_receipts, until=lambda r: len(r) >= len(events)
    )
    from_kafka = [decode(r.value) for r in receipts]
    crm_part = next(e for e in from_kafka if isinstance(e, ExportPart) and e.data.owner == "crm")
    assert crm_part.data.sealed
    assert orjson.loads(open_sealed(key_while_open, crm_part.data.sealed))
    assert await export.private_key(request_id) is None
    with pytest.raises(CryptoError):
        open_sealed(bytes(32), crm_part.data.sealed)
    assert not list((export.storage / "parts").rglob("*.jsonl"))

    # A tampered link or another bundle's id is refused; an expired link, then bundle, is gone.
    query = view["download_url"].split("?", 1)[1]
    tampered = await export.http.get(view["download_url"][:-4] + "0000")
    assert tampered.status_code == 403
    other = await export.http.get(f"/v1/downloads/{'0' * 32}?{query}")
    assert other.status_code == 403
    export.clock.advance(export.settings.link_ttl + timedelta(seconds=1))
    expired_link = await export.http.get(view["download_url"])
    assert expired_link.status_code == 410
    assert "expired" in expired_link.json()["detail"]
    bundle_file = export.storage / "bundles" / f"{done.data.bundle_id}.zip"
    assert bundle_file.exists()
    export.clock.advance(export.settings.bundle_ttl)
    rows = await export.poll_db(
        "SELECT bundle_deleted_at FROM requests WHERE request_id = $1",
        request_id,
        until=lambda r: r[0]["bundle_deleted_at"] is not None,
    )
    assert rows[0]["bundle_deleted_at"] is not None
    assert not bundle_file.exists()
    assert (await export.export_view(request_id))["download_url"] is None
    expires = int((export.clock.now() + timedelta(hours=1)).timestamp())
    secret = export.settings.link_secret.get_secret_value().encode()
    fresh = links.download_path(secret, request_id, done.data.bundle_id, expires)
    gone = await export.http.get(fresh)
    assert gone.status_code == 410
    assert "deleted" in gone.json()["detail"]


async def test_past_the_deadline_a_silent_owner_is_named_and_bad_parts_fail_with_a_reason(
    export: Harness,
):
    subject, request_id = "usr_7", "req_partial"
    await export.request_export(subject, request_id)
    jobs = await export.jobs(request_id, len(OWNERS))
    silent, bad_sum, bad_scheme, outside = "support", "analytics", "marketing", "accounts"
    unable = "billing"
    failed = new_event(
        ExportPartFailed,
        subject=subject,
        source="billing-service",
        data=ExportPartFailedData(
            job_id=jobs[unable].data.job_id,
            request_id=request_id,
            owner=unable,
            error="archive offline",
        ),
    )
    events: list[ExportPart] = []
    for owner, job in sorted(jobs.items()):
        category = job.data.categories[0]
        records = records_for(owner, category, 3)
        if owner in (silent, unable):
            continue
        if owner == bad_sum:
            [part] = inline_parts(job, category, records)
            events.append(part.model_copy(update={"data": part.data.model_copy(
                update={"sha256": "0" * 64})}))  # fmt: skip
        elif owner == bad_scheme:
            events.append(part_event(job, category, 0, 1, sha256="1" * 64,
                                     location="https://evil.example/part.json"))  # fmt: skip
        elif owner == outside:
            events.append(part_event(job, category, 0, 1, sha256="1" * 64,
                                     location="file:///etc/passwd"))  # fmt: skip
        else:
            events.extend(inline_parts(job, category, records))
    await export.send(failed, *events)
    await export.wait_status(request_id, "in_progress")
    rows = await export.poll_db(
        "SELECT count(*) AS n FROM parts WHERE request_id = $1",
        request_id,
        until=lambda r: r[0]["n"] == len(events),
    )
    assert rows[0]["n"] == len(events)

    new_deadline = deadline_for(export.clock.now()) + timedelta(days=20)
    extension = make.request_extended(subject, request_id, new_deadline, reason="complex")
    await produce(export.infra.kafka, export.topics.privacy_requests, [extension])
    await export.statuses(request_id, lambda s: any(e.data.deadline == new_deadline for e in s))
    export.clock.set(new_deadline + timedelta(seconds=1))

    done = await export.wait_status(request_id, "partially_completed")
    assert done.data.deadline == new_deadline
    assert done.data.missing_owners == sorted([silent, bad_sum, bad_scheme, outside, unable])
    outcomes = {o.owner: o for o in done.data.outcomes}
    assert outcomes[silent].outcome == "missing"
    assert outcomes[bad_sum].outcome == "failed"
    assert "sha256 mismatch" in (outcomes[bad_sum].reason or "")
    assert "only file://" in (outcomes[bad_scheme].reason or "")
    assert "outside the exchange folder" in (outcomes[outside].reason or "")
    assert outcomes[unable].outcome == "failed"
    assert outcomes[unable].reason == "archive offline"
    assert outcomes["crm"].outcome == "exported"

    view = await export.export_view(request_id)
    download = await export.http.get(view["download_url"])
    _archive, manifest = open_zip(download.content)
    assert {f["owner"] for f in manifest["files"]} == set(OWNERS) - {
        silent, bad_sum, bad_scheme, outside, unable
    }  # fmt: skip
    named = {n["owner"]: n["outcome"] for n in manifest["not_included"]}
    assert named == {
        silent: "missing", bad_sum: "failed", bad_scheme: "failed", outside: "failed",
        unable: "failed",
    }  # fmt: skip
    assert await export.private_key(request_id) is None


async def test_cancellation_stops_the_request_deletes_partial_files_and_later_parts_are_dropped(
    export: Harness,
):
    subject, request_id = "usr_9", "req_cancel"
    await export.request_export(subject, request_id)
    jobs = await export.jobs(request_id, len(OWNERS))
    crm = jobs["crm"]
    first = inline_parts(crm, "crm_data", records_for("crm", "crm_data", 10))
    await export.send(*first)
    await export.wait_status(request_id, "in_progress")
    assert list((export.storage / "parts").rglob("*.jsonl"))
    unknown = part_event(crm, "crm_data", 0, 1, sha256="2" * 64, sealed="AAAA")
    unknown = unknown.model_copy(
        update={"data": unknown.data.model_copy(update={"request_id": "req_nobody"})}
    )
    await export.send(unknown)

    await export.cancel(subject, request_id)
    cancelled = await export.wait_status(request_id, "cancelled")
    assert cancelled.data.bundle_id is None
    assert not list((export.storage / "parts").rglob("*.jsonl"))
    assert await export.private_key(request_id) is None

    late = inline_parts(jobs["billing"], "billing_records", records_for("billing", "b", 2))
    await export.send(*late)
    dead = await read_topic(export.infra.kafka, export.topics.deadletter)
    reasons = [dict(r.headers)["error"].decode() for r in dead]
    assert reasons == ["contract: unknown export request 'req_nobody'"]
    rows = await export.poll_db(
        "SELECT count(*) AS n FROM inbox WHERE event_id = $1",
        late[0].id,
        until=lambda r: r[0]["n"] == 1,
    )
    assert rows[0]["n"] == 1  # consumed, suppressed
    assert not list((export.storage / "parts").rglob("*.jsonl"))
    view = await export.export_view(request_id)
    assert view["status"] == "cancelled"
    assert view["download_url"] is None
