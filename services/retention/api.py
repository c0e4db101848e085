"""The HTTP read side: schedules, dry runs, jobs, requests, holds, certificates (bearer token)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from services.retention import domain, store
from services.retention.context import Context
from shared.plumbing.service import Api

HOLD_EXPLAINED = {
    "court_order": "a court ordered the data kept",
    "subpoena": "the data is subject to a subpoena",
    "dispute": "the data is needed for a pending dispute",
    "regulator": "a regulator asked for the data to be kept",
}
PAGE = 5000


def _at(value: str | None, default: datetime) -> datetime:
    """A date or date-time query value (dates mean the end of that day, UTC)."""
    if value is None:
        return default
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise HTTPException(422, "at must be an ISO date or date-time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _row(record: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(record).items() if k != "fields"}


def make_api(ctx: Context) -> Api:
    """Schedules, dry runs, jobs, requests, holds and certificates (behind the bearer token)."""
    router = APIRouter(prefix="/v1", tags=["retention"])

    @router.get("/subjects/{subject_id}/retention")
    async def subject_retention(subject_id: str, at: str | None = None) -> dict[str, Any]:
        """Schedule per category, holds, jobs, certificates; with `at`, the dry run."""
        async with ctx.pool.acquire() as conn:
            subject = await store.accounts.subject(conn, subject_id)
            rows = await store.timers.subject_timers(conn, subject_id)
            holds = await store.holds.holds_for(conn, [subject_id])
            jobs = await store.jobs.list_jobs(conn, subject_id=subject_id)
            certs = await store.certificates.subject_certificates(conn, subject_id)
            requests = await store.requests.subject_requests(conn, subject_id)
        result: dict[str, Any] = {
            "subject_id": subject_id,
            "account_id": subject["account_id"] if subject else None,
            "account_status": subject["status"] if subject else None,
            "categories": _per_category(ctx, rows, jobs),
            "schedule": [
                {k: v for k, v in dict(r).items() if k not in ("subject_id", "account_id")}
                for r in rows
            ],
            "holds": [_hold(h) for h in holds],
            "jobs": [_row(j) for j in jobs],
            "certificates": [
                {"seq": c["seq"], "hash": c["hash"], **_json(c["body"])} for c in certs
            ],
            "requests": [dict(r) for r in requests],
        }
        if at is not None:
            when = _at(at, ctx.clock.now())
            open_timers = [
                store.timers.timer_from_row(r)
                for r in rows
                if r["status"] in ("pending", "blocked")
            ]
            fired = [store.timers.timer_from_row(r) for r in rows if r["status"] == "fired"]
            answers = domain.dry_run.dry_run(ctx.rules, open_timers, holds, when, fired)
            result["at"] = when
            result["dry_run"] = [a.model_dump() for a in answers]
        return result

    @router.get("/retention/dry-run")
    async def dry_run_all(at: str) -> dict[str, Any]:
        """For every subject: how many categories would be deleted, restricted or blocked."""
        when = _at(at, ctx.clock.now())
        counts: Counter[tuple[str, str, str]] = Counter()
        subjects: set[str] = set()
        async with ctx.pool.acquire() as conn:
            holds = [
                store.holds.hold_from_row(r)
                for r in await store.holds.all_holds(conn)
                if r["released_at"] is None
            ]
            after = 0
            while page := await store.timers.open_timers_page(conn, when, after, PAGE):
                after = page[-1].id
                for firing in domain.jobs.due_jobs(page, holds, when):
                    answer = domain.dry_run.firing_answer(firing)
                    counts[(answer.category, answer.action, answer.reason)] += 1
                    subjects.add(firing.timer.subject_id)
        return {
            "at": when,
            "subjects": len(subjects),
            "counts": [
                {"category": c, "action": a, "reason": r, "count": n}
                for (c, a, r), n in sorted(counts.items())
            ],
        }

    @router.get("/jobs")
    async def jobs(
        overdue: bool | None = None,
        status: str | None = Query(None, pattern="^(issued|completed|failed|cancelled)$"),
        subject_id: str | None = None,
        request_id: str | None = None,
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> dict[str, Any]:
        """Jobs by overdue flag, status, subject or request."""
        async with ctx.pool.acquire() as conn:
            rows = await store.jobs.list_jobs(
                conn,
                overdue=overdue,
                status=status,
                subject_id=subject_id,
                request_id=request_id,
                limit=limit,
            )
        return {"jobs": [_row(r) for r in rows]}

    @router.get("/requests")
    async def requests_due(
        due_within_days: int = Query(7, ge=0, le=366),
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> dict[str, Any]:
        """Open requests whose deadline is within N days (or already past), soonest first."""
        now = ctx.clock.now()
        async with ctx.pool.acquire() as conn:
            rows = await store.requests.open_requests_due_before(
                conn, now + timedelta(days=due_within_days), limit
            )
        return {
            "requests": [{**dict(r), "overdue": r["overdue"] or r["deadline"] < now} for r in rows]
        }

    @router.get("/requests/{request_id}")
    async def request(request_id: str) -> dict[str, Any]:
        """A request: status, deadline (and extension), outcome per category, its jobs."""
        async with ctx.pool.acquire() as conn:
            req = await store.requests.request(conn, request_id, lock=False)
            if req is None:
                raise HTTPException(404, "unknown request")
            outcomes = await store.requests.outcomes(conn, request_id)
            jobs = await store.jobs.list_jobs(conn, request_id=request_id)
        now = ctx.clock.now()
        return {
            **dict(req),
            "overdue": req["overdue"]
            or domain.requests.is_overdue(req["deadline"], req["status"], now),
            "outcomes": [o.model_dump() for o in outcomes],
            "jobs": [_row(j) for j in jobs],
        }

    @router.get("/holds")
    async def holds(include_released: bool = False) -> dict[str, Any]:
        """Legal holds, each with what it covers and why."""
        async with ctx.pool.acquire() as conn:
            rows = await store.holds.all_holds(conn)
        return {
            "holds": [
                {
                    **dict(r),
                    "active": r["released_at"] is None,
                    "explanation": _explain(r),
                }
                for r in rows
                if include_released or r["released_at"] is None
            ]
        }

    @router.get("/certificates/verify")
    async def verify() -> dict[str, Any]:
        """Check the deletion-certificate chain and that every completed deletion has one."""
        async with ctx.pool.acquire() as conn:
            problems = await verify_certificates(conn)
        return {"intact": not problems, "problems": problems}

    return Api(router)


async def verify_certificates(conn: Any) -> list[str]:
    """Problems with the certificate log: broken links, altered entries, missing certificates."""
    problems = domain.certificates.verify_chain(await store.certificates.chain(conn))
    missing = await store.certificates.uncertified_jobs(conn)
    problems += [f"{j}: completed without a certificate" for j in missing]
    return problems


def _per_category(ctx: Context, timers: list[Any], jobs: list[Any]) -> list[dict[str, Any]]:
    """Each category: its rule, the next open timer (or why none), and its jobs."""
    result = []
    for name, rule in ctx.rules.categories.items():
        open_timers = [
            t for t in timers if t["category"] == name and t["status"] in ("pending", "blocked")
        ]
        upcoming = min(open_timers, key=lambda t: t["due_at"], default=None)
        result.append(
            {
                "category": name,
                "owner": rule.owner,
                "period": str(rule.period),
                "period_from": rule.period_from,
                "legal_obligation": rule.legal_obligation,
                "next": None
                if upcoming is None
                else {k: upcoming[k] for k in ("due_at", "mode", "reason", "status", "blocked_by")},
                "jobs": [
                    {k: j[k] for k in ("job_id", "mode", "status", "attempt", "overdue")}
                    for j in jobs
                    if j["category"] == name
                ],
            }
        )
    return result


def _json(body: Any) -> dict[str, Any]:
    import orjson

    value: dict[str, Any] = orjson.loads(body)
    return value


def _hold(hold: domain.model.Hold) -> dict[str, Any]:
    return {**hold.model_dump(), "explanation": _explain(hold.model_dump())}


def _explain(h: Any) -> str:
    who = (
        f"every subject of account {h['account_id']}"
        if h["scope"] == "account"
        else f"subject {h['subject_id']}"
    )
    what = "all categories" if h["categories"] is None else ", ".join(h["categories"])
    why = HOLD_EXPLAINED.get(h["reason"] or "", h["reason"] or "reason not given")
    return f"No deletion of {what} for {who}: {why}."
