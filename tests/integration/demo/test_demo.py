"""`make demo`'s scenario against the three services running in this process (real Kafka and
PostgreSQL, private topics and schemas, uvicorn on free ports), with the simulated owners."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI
from rich.console import Console

from demo.api import Api
from demo.config import ROOT, DemoConfig
from demo.narrate import Narrator
from demo.scenario import DemoFailed, Scenario, run_scenario
from services.consent.app import build_runtime as consent_runtime
from services.consent.settings import ConsentSettings
from services.export.app import build_runtime as export_runtime
from services.export.settings import ExportSettings, default_owners
from services.retention.app import build_runtime as retention_runtime
from services.retention.settings import RetentionSettings
from shared.catalogue import load_retention
from shared.contract.topics import Topics
from tests.support.infra import Infra

pytestmark = pytest.mark.integration

TOKEN = "demo-test-token-0123"


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(app: FastAPI, sock: socket.socket) -> AsyncIterator[None]:
    """The app under uvicorn on `sock` (its lifespan starts and stops the service's runtime)."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped while starting")
                await asyncio.sleep(0.05)
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def stack(
    infra: Infra, topics: Topics, test_id: str, tmp_path: Path
) -> AsyncIterator[DemoConfig]:
    """The three services on one private topic set, each with its own schema."""
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka,
        "database_url": infra.database_url,
        "topics": topics,
        "api_token": TOKEN,
        "batch_timeout_ms": 20,
    }
    names = {"consent": f"t_{test_id}_c", "retention": f"t_{test_id}_r", "export": f"t_{test_id}_e"}
    socks = {name: _socket() for name in names}
    urls = {name: f"http://127.0.0.1:{socks[name].getsockname()[1]}" for name in names}
    consent = consent_runtime(
        ConsentSettings(
            **common,
            db_schema=names["consent"],
            group_id=f"g-{test_id}-c",
            ledger_key="demo-ledger-key-0123",
        )
    )
    retention = retention_runtime(
        RetentionSettings(**common, db_schema=names["retention"], group_id=f"g-{test_id}-r")
    )
    export = export_runtime(
        ExportSettings(
            **common,
            db_schema=names["export"],
            group_id=f"g-{test_id}-e",
            service_key=base64.b64encode(bytes(range(32))).decode(),
            link_secret="demo-link-secret-0123456789abcdef",
            storage_dir=tmp_path / "storage",
            exchange_dir=tmp_path / "exchange",
            public_base_url=urls["export"],
            loop_interval=0.1,
        )
    )
    try:
        async with (
            serving(consent.asgi(), socks["consent"]),
            serving(retention.asgi(), socks["retention"]),
            serving(export.asgi(), socks["export"]),
        ):
            yield DemoConfig(
                consent_url=urls["consent"],
                retention_url=urls["retention"],
                export_url=urls["export"],
                token=TOKEN,
                bootstrap=infra.kafka,
                topics=topics,
                owners_group=f"g-{test_id}-owners",
                wait=20.0,
            )
    finally:
        conn = await asyncpg.connect(infra.database_url)
        try:
            for schema in names.values():
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_the_demo_walks_one_person_through_every_promise_with_the_outcomes_shown(
    stack: DemoConfig,
):
    printed = io.StringIO()
    result = await run_scenario(stack, Narrator(Console(file=printed, width=140)))
    rules = load_retention()
    categories = sorted(rules.categories)

    # 1-3: consent decisions, the opt-out's certified deletion, GPC
    assert result.signup_decisions == {
        "marketing_email": True,
        "analytics_cookies": True,
        "personalisation": False,
    }
    assert result.optout_allowed is False
    assert result.marketing_job["category"] == "marketing_profile"
    assert result.marketing_job["reason"] == "consent_withdrawn"
    assert result.certificate["job_id"] == result.marketing_job["job_id"]
    assert sorted(result.gpc_withdrawn) == [
        "analytics_providers", "marketing_email", "partner_marketing",
    ]  # fmt: skip
    # 4: every owner was asked; all but consent answered by the simulated owners
    assert result.export_owners == sorted(default_owners())
    manifest = result.manifest
    assert manifest["status"] == "completed", manifest["not_included"]
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {
        f"data/{owner}/{category}.json"
        for owner, cats in default_owners().items()
        for category in cats
    }
    assert files["data/consent/consent_records.json"]["record_count"] >= 3  # sign-up, opt-out, GPC
    assert all(f["record_count"] >= 1 and len(f["sha256"]) == 64 for f in files.values())
    # 5: one closure timer per category
    assert sorted(t["category"] for t in result.schedule) == categories
    # 6: the hold blocked everything, nothing went out until the release, then every job did
    assert result.blocked == categories
    assert result.jobs_before_release == 0
    released = {(j["category"], j["mode"]) for j in result.released_jobs}
    assert {c for c, _ in released} == set(categories)
    assert ("billing_records", "restrict") in released  # a legal obligation: restricted only
    assert result.erasure_status == "completed"
    assert result.bundle_after_erasure == 410
    assert result.ledger_chain_ok is True
    text = printed.getvalue()
    for heading in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert heading in text
    assert "manifest.json" in text


async def test_a_missing_outcome_fails_the_demo_naming_what_it_waited_for(tmp_path: Path):
    config = DemoConfig("http://c", "http://r", "http://e", "t", "127.0.0.1:1", wait=0.3)
    scenario = Scenario(config, Narrator(Console(file=io.StringIO())), Api(config), None)  # type: ignore[arg-type]

    async def never() -> None:
        return None

    with pytest.raises(DemoFailed, match="waited 0 s for the thing that never comes"):
        await scenario.until("the thing that never comes", never)
    await scenario.api.close()


def test_without_a_running_stack_python_m_demo_says_so_and_exits_non_zero(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=ROOT,
        env={**os.environ, "PP_LOCAL_DIR": str(tmp_path), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "make run" in done.stdout
