"""The export service on real Kafka and PostgreSQL, to the letter of the policy: the access file
names the register's recipients (3.1), and an erasure trims an export rather than defeating it
(5.1 with 5.3)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.export.app import build_runtime
from services.export.settings import default_owners
from shared.contract.events import ExportJob, ExportPart
from shared.plumbing.clock import ManualClock
from shared.recipients import load_recipients
from tests.integration.export.harness import (
    Harness,
    inline_parts,
    open_zip,
    records_for,
    settings_for,
)
from tests.support import events as make
from tests.support.kafka import produce

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


def answers(jobs: dict[str, ExportJob], *, skip: str = "") -> list[ExportPart]:
    """Every owner's parts (but `skip`'s), three records a category."""
    return [
        part
        for owner, job in sorted(jobs.items())
        if owner != skip
        for category in job.data.categories
        for part in inline_parts(job, category, records_for(owner, category, 3))
    ]


async def erase(export: Harness, subject: str, request_id: str, scope: object) -> None:
    event = make.erasure(
        subject, request_id, verified_by="support:agent_1", source="portal", scope=scope
    )
    await produce(export.infra.kafka, export.topics.privacy_requests, [event])
    await processed(export, event.id)


async def processed(export: Harness, *event_ids: str) -> None:
    rows = await export.poll_db(
        "SELECT count(*) AS n FROM inbox WHERE event_id = ANY($1)",
        list(event_ids),
        until=lambda r: r[0]["n"] == len(event_ids),
    )
    assert rows[0]["n"] == len(event_ids)


async def download(export: Harness, request_id: str) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    view = await export.export_view(request_id)
    response = await export.http.get(view["download_url"])
    assert response.status_code == 200, response.text
    return open_zip(response.content)


async def test_the_access_file_names_the_registers_recipients_and_each_purposes_basis(
    export: Harness,
):
    subject, request_id = "usr_recipients", "req_recipients"
    await export.request_export(subject, request_id)
    jobs = await export.jobs(request_id, len(OWNERS))
    await export.send(*answers(jobs))
    await export.wait_status(request_id, "completed")
    archive, _ = await download(export, request_id)
    information = json.loads(archive.read("information.json"))["categories"]

    register = {r.name: r for r in load_recipients().recipients.values()}
    for category, info in information.items():
        for recipient in info["recipients"]:
            assert recipient["name"] in register, (category, recipient)
            assert recipient["name"] not in OWNERS
            assert recipient["role"] == register[recipient["name"]].role.value
        for purpose in info["purposes"]:
            assert purpose["description"], (category, purpose)
            assert purpose["basis"], (category, purpose)
    marketing = {r["name"]: r for r in information["marketing_profile"]["recipients"]}
    assert marketing["Marketing campaign processor"]["role"] == "processor"
    assert marketing["Marketing campaign processor"]["purposes"] == ["partner_marketing"]
    billing = {p["purpose"]: p["basis"] for p in information["billing_records"]["purposes"]}
    assert billing["legal_obligation_tax"] == "legal_obligation"
    assert information["billing_records"]["retention_period"] == "P7Y"
    support = information["support_communications"]["purposes"]
    assert [(p["purpose"], p["basis"]) for p in support] == [("customer_support", "contract")]


async def test_an_erasure_of_one_category_trims_the_open_export_and_keeps_bundles_it_misses(
    export: Harness,
):
    subject, request_id = "usr_trim", "req_trim"
    await export.request_export(subject, request_id)
    jobs = await export.jobs(request_id, len(OWNERS))
    marketing = inline_parts(
        jobs["marketing"],
        "marketing_profile",
        records_for("marketing", "marketing_profile", 400),
        max_bytes=4096,
    )
    assert len(marketing) >= 2
    await export.send(marketing[0])
    await export.wait_status(request_id, "in_progress")
    kept = list((export.storage / "parts").rglob("marketing_profile/*.jsonl"))
    assert kept

    await erase(export, subject, "era_marketing", ["marketing_profile"])
    erased = await export.db(
        "SELECT owner, category, reason FROM erased_categories WHERE request_id = $1", request_id
    )
    assert [(r["owner"], r["category"]) for r in erased] == [("marketing", "marketing_profile")]
    assert not any(path.exists() for path in kept)  # the parts already in are deleted
    rows = await export.db(
        "SELECT status, sealed_key FROM requests WHERE request_id = $1", request_id
    )
    assert rows[0]["status"] == "in_progress"  # not cancelled: the access request goes on
    assert rows[0]["sealed_key"] is not None

    late = marketing[1:]
    await export.send(*late)
    await processed(export, *(p.id for p in late))
    stored = await export.db(
        "SELECT count(*) AS n FROM parts WHERE request_id = $1 AND category = $2",
        request_id,
        "marketing_profile",
    )
    assert stored[0]["n"] == 0  # dropped, never kept
    assert not list((export.storage / "parts").rglob("marketing_profile/*.jsonl"))

    await export.send(*answers(jobs, skip="marketing"))  # the export no longer waits for it
    done = await export.wait_status(request_id, "completed")
    outcome = next(o for o in done.data.outcomes if o.category == "marketing_profile")
    assert outcome.outcome == "deleted"
    assert outcome.reason is not None
    assert "era_marketing" in outcome.reason
    archive, manifest = await download(export, request_id)
    assert manifest["erased"] == [
        {"owner": "marketing", "category": "marketing_profile", "reason": outcome.reason}
    ]
    assert [n["category"] for n in manifest["not_included"]] == ["marketing_profile"]
    names = archive.namelist()
    assert "data/marketing/marketing_profile.json" not in names
    assert "data/crm/crm_data.json" in names

    # A later erasure that misses part of the bundle leaves it; one that covers it deletes it.
    await erase(export, subject, "era_usage", ["usage_data", "crm_data"])
    rows = await export.db(
        "SELECT bundle_id, bundle_deleted_at FROM requests WHERE request_id = $1", request_id
    )
    assert rows[0]["bundle_deleted_at"] is None
    bundle = export.storage / "bundles" / f"{rows[0]['bundle_id']}.zip"
    assert bundle.exists()
    await erase(export, subject, "era_all", "all")
    rows = await export.db(
        "SELECT bundle_deleted_at FROM requests WHERE request_id = $1", request_id
    )
    assert rows[0]["bundle_deleted_at"] is not None
    assert not bundle.exists()


async def test_the_access_file_tells_disclosures_to_authorities_but_not_while_secrecy_is_ordered(
    export: Harness,
):
    subject = "usr_disclosed"
    now = export.clock.now()
    public = make.disclosure(subject, "disc_public", disclosed_at=now - timedelta(days=30))
    secret = make.disclosure(
        subject,
        "disc_secret",
        disclosed_at=now - timedelta(days=2),
        secret_until=now + timedelta(days=90),
        categories=("usage_data",),
    )
    await produce(export.infra.kafka, export.topics.legal_holds, [public, secret])
    await processed(export, public.id, secret.id)

    await export.request_export(subject, "req_disc_1")
    jobs = await export.jobs("req_disc_1", len(OWNERS))
    await export.send(*answers(jobs))
    await export.wait_status("req_disc_1", "completed")
    archive, manifest = await download(export, "req_disc_1")
    told = json.loads(archive.read("information.json"))["disclosures"]
    assert [(d["reference"], d["categories"]) for d in told] == [("AZ disc_public", ["crm_data"])]
    assert told[0]["authority"] == "Amtsgericht Berlin-Mitte"
    assert told[0]["legal_basis"] == "GDPR Art. 6(1)(c) with § 100g StPO"
    assert "disclosed_by" not in told[0]
    everything = b"".join(archive.read(n) for n in archive.namelist())
    assert b"disc_secret" not in everything  # not a word of the secret one: no count, no gap
    assert b"secret" not in json.dumps(manifest).encode()

    export.clock.advance(timedelta(days=91))  # the secrecy order has run out
    await export.request_export(subject, "req_disc_2")
    jobs = await export.jobs("req_disc_2", len(OWNERS))
    await export.send(*answers(jobs))
    await export.wait_status("req_disc_2", "completed")
    archive, _ = await download(export, "req_disc_2")
    told = json.loads(archive.read("information.json"))["disclosures"]
    assert [d["reference"] for d in told] == ["AZ disc_public", "AZ disc_secret"]
