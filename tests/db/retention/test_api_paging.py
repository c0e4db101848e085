"""Retention's list routes page with a bounded `limit` and a cursor (real PostgreSQL, no Kafka)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.retention.api import make_api
from services.retention.app import MIGRATIONS
from services.retention.context import Context
from services.retention.settings import RetentionSettings
from shared.catalogue import load_retention
from shared.plumbing import db
from shared.plumbing.clock import ManualClock
from tests.integration.retention.harness import DAY, T0

pytestmark = pytest.mark.db

OPEN_DUE = 250  # open timers due by the dry run's date: three pages of 100
TIMERS = """
INSERT INTO timers (subject_id, category, owner, mode, reason, cause, due_at, status, created_at)
SELECT 'usr_' || (i % 97), c.category, c.owner, 'delete', 'retention_expired', 'closure',
       $1::timestamptz + (i || ' minutes')::interval, $2, $1::timestamptz
FROM generate_series(1, $3) AS i,
     LATERAL (SELECT (ARRAY['usage_data', 'crm_data'])[1 + i % 2] AS category,
                     (ARRAY['analytics', 'crm'])[1 + i % 2] AS owner) AS c
"""
JOBS = """
INSERT INTO jobs (job_id, kind, subject_id, owner, category, mode, reason, due_by, issued_at,
                  last_issued_at, overdue)
SELECT 'job_' || lpad(i::text, 4, '0'), 'deletion', 'usr_' || i, 'crm', 'crm_data', 'delete',
       'retention_expired', $1::timestamptz, $1::timestamptz + ((i % 7) || ' seconds')::interval,
       $1::timestamptz, i % 3 = 0
FROM generate_series(1, $2) AS i
"""


@pytest.fixture
async def client(infra, schema) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool]]:
    conn = await asyncpg.connect(infra.database_url)
    try:
        await db.migrate(conn, schema, MIGRATIONS)
    finally:
        await conn.close()
    pool = await db.create_pool(infra.database_url, schema, min_size=1, max_size=2)
    settings = RetentionSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schema,
        api_token="t" * 16,
    )
    ctx = Context(settings=settings, rules=load_retention(), clock=ManualClock(T0))
    await ctx.open(pool)
    app = FastAPI()
    app.include_router(make_api(ctx).private)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://retention") as http:
        yield http, pool
    await pool.close()


async def every_page(http: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        query = params | ({"after": after} if after else {})
        response = await http.get(path, params=query)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        after = pages[-1]["next"]
        if after is None:
            return pages


async def test_the_dry_run_over_more_timers_than_a_page_returns_each_once_across_pages(client):
    http, pool = client
    async with pool.acquire() as conn:
        await conn.execute(TIMERS, T0, "pending", OPEN_DUE - 20)
        await conn.execute(TIMERS, T0, "blocked", 20)
        await conn.execute(TIMERS, T0, "fired", 30)  # not open: not in the dry run
        await conn.execute(TIMERS, T0 + 400 * DAY, "pending", 40)  # due after the date
        expected = {
            r["id"]: r["subject_id"]
            for r in await conn.fetch(
                "SELECT id, subject_id FROM timers WHERE status IN ('pending', 'blocked')"
                " AND due_at <= $1",
                T0 + 30 * DAY,
            )
        }
    assert len(expected) == OPEN_DUE
    at = (T0 + 30 * DAY).date().isoformat()
    pages = await every_page(http, "/v1/retention/dry-run", at=at)
    assert [len(p["timers"]) for p in pages] == [100, 100, 50]
    seen = [t["timer_id"] for p in pages for t in p["timers"]]
    assert sorted(seen) == sorted(expected)  # every open due timer, each exactly once
    assert all(expected[t["timer_id"]] == t["subject_id"] for p in pages for t in p["timers"])
    assert sum(c["count"] for p in pages for c in p["counts"]) == OPEN_DUE
    assert all(p["subjects"] == len({t["subject_id"] for t in p["timers"]}) for p in pages)
    assert {t["action"] for p in pages for t in p["timers"]} == {"delete"}

    other_day = await http.get(
        "/v1/retention/dry-run", params={"at": "2030-01-01", "after": pages[0]["next"]}
    )
    assert other_day.status_code == 422
    assert "another `at`" in other_day.json()["detail"]


async def test_jobs_page_by_issue_time_and_id_and_filters_still_apply(client):
    http, pool = client
    async with pool.acquire() as conn:
        await conn.execute(JOBS, T0, 230)
    pages = await every_page(http, "/v1/jobs", limit=100)
    ids = [j["job_id"] for p in pages for j in p["jobs"]]
    assert len(ids) == len(set(ids)) == 230
    keys = [(j["issued_at"], j["job_id"]) for p in pages for j in p["jobs"]]
    assert keys == sorted(keys)
    overdue = await every_page(http, "/v1/jobs", overdue="true", limit=30)
    assert len(overdue) == 3
    assert {j["job_id"] for p in overdue for j in p["jobs"]} == {
        f"job_{i:04d}" for i in range(1, 231) if i % 3 == 0
    }
    first = (await http.get("/v1/jobs")).json()
    assert len(first["jobs"]) == 100  # the default page
    assert first["next"] is not None


async def test_holds_and_requests_page_too(client):
    http, pool = client
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO holds (hold_id, scope, subject_id, reason, placed_at, released_at)"
            " SELECT 'hold_' || i, 'subject', 'usr_' || i, 'dispute', $1::timestamptz,"
            " CASE WHEN i % 4 = 0 THEN $1::timestamptz END FROM generate_series(1, 25) AS i",
            T0,
        )
        await conn.execute(
            "INSERT INTO requests (request_id, subject_id, kind, requested_at, deadline)"
            " SELECT 'req_' || i, 'usr_' || i, 'erasure', $1::timestamptz,"
            " $1::timestamptz + ((i % 5) || ' days')::interval FROM generate_series(1, 23) AS i",
            T0,
        )
    active = await every_page(http, "/v1/holds", limit=7)
    assert sorted(h["hold_id"] for p in active for h in p["holds"]) == sorted(
        f"hold_{i}" for i in range(1, 26) if i % 4
    )
    every = await every_page(http, "/v1/holds", include_released="true", limit=7)
    assert len({h["hold_id"] for p in every for h in p["holds"]}) == 25
    due = await every_page(http, "/v1/requests", due_within_days=7, limit=5)
    listed = [r["request_id"] for p in due for r in p["requests"]]
    assert sorted(listed) == sorted(f"req_{i}" for i in range(1, 24))
    assert len(listed) == 23


@pytest.mark.parametrize(
    "path", ["/v1/jobs", "/v1/requests", "/v1/holds", "/v1/retention/dry-run?at=2027-01-01"]
)
async def test_a_too_large_limit_or_a_forged_cursor_is_refused_with_422(client, path):
    http, _ = client
    sep = "&" if "?" in path else "?"
    too_large = await http.get(f"{path}{sep}limit=1001")
    assert too_large.status_code == 422
    [error] = too_large.json()["detail"]
    assert error["loc"] == ["query", "limit"]
    assert error["msg"] == "Input should be less than or equal to 1000"
    assert (await http.get(f"{path}{sep}limit=1000")).status_code == 200
    forged = await http.get(f"{path}{sep}after=bm90IGEgY3Vyc29y")
    assert forged.status_code == 422
    assert forged.json()["detail"] == "after: not a cursor this endpoint returned as `next`"
