"""The HTTP read side: schedules, dry runs, jobs, requests, holds, certificates (bearer token).

List routes answer a page at a time (`limit`, `after`, `next`; see shared.plumbing.paging).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from services.retention import domain, store
from services.retention.checkpoints import CERTIFICATES, certificate_leaves
from services.retention.context import Context
from services.retention.disclosures import withheld
from services.retention.views import (
    ChainCheck,
    DryRunCount,
    DryRunPage,
    DryRunTimer,
    HoldRecord,
    HoldsPage,
    Job,
    JobsPage,
    Request,
    RequestDetail,
    RequestsPage,
    RollingPurges,
    SubjectRetention,
)
from shared.evidence.api import anchored, checkpoint_router
from shared.plumbing import paging
from shared.plumbing.service import Api

HOLD_EXPLAINED = {
    "court_order": "a court ordered the data kept",
    "subpoena": "the data is subject to a subpoena",
    "dispute": "the data is needed for a pending dispute",
    "regulator": "a regulator asked for the data to be kept",
    "restriction_unlawful_erasure_opposed": (
        "the person restricted processing and asked to keep the data instead of erasing it"
    ),
    "restriction_needed_for_legal_claims": (
        "the person restricted processing and needs the data for a legal claim"
    ),
}


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


def make_api(ctx: Context) -> Api:
    """Schedules, dry runs, jobs, requests, holds and certificates (behind the bearer token)."""
    router = APIRouter(prefix="/v1", tags=["retention"])

    @router.get("/subjects/{subject_id}/retention")
    async def subject_retention(subject_id: str, at: str | None = None) -> SubjectRetention:
        """Schedule per category, holds, jobs, certificates; with `at`, the dry run."""
        async with ctx.pool.acquire() as conn:
            subject = await store.accounts.subject(conn, subject_id)
            rows = await store.timers.subject_timers(conn, subject_id)
            holds = await store.holds.holds_for(conn, [subject_id])
            jobs = await store.jobs.list_jobs(conn, subject_id=subject_id)
            certs = await store.certificates.subject_certificates(conn, subject_id)
            requests = await store.requests.subject_requests(conn, subject_id)
            purges = {r["category"]: r for r in await store.purges.subject_timers(conn, subject_id)}
            disclosed = await store.disclosures.subject_disclosures(conn, subject_id)
        result: dict[str, Any] = {
            "subject_id": subject_id,
            "account_id": subject["account_id"] if subject else None,
            "account_status": subject["status"] if subject else None,
            "categories": _per_category(ctx, rows, jobs, purges),
            "schedule": [
                {k: v for k, v in dict(r).items() if k not in ("subject_id", "account_id")}
                for r in rows
            ],
            "holds": [_hold(h) for h in holds],
            "jobs": [dict(j) for j in jobs],
            "certificates": [
                {"seq": c["seq"], "hash": c["hash"], **_json(c["body"])} for c in certs
            ],
            "requests": [dict(r) for r in requests],
            "disclosures": [
                {**dict(d), "withheld": withheld(d["secret_until"], ctx.clock.now())}
                for d in disclosed
            ],
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
            answers += _purge_answers(ctx, purges, when)
            result["at"] = when
            result["dry_run"] = answers
        return SubjectRetention.model_validate(result)

    @router.get("/retention/dry-run")
    async def dry_run_all(
        at: str, limit: int = paging.limit_query(), after: str | None = paging.after_query()
    ) -> DryRunPage:
        """Every subject's open timers due by `at`, a page at a time: what each would do."""
        when = _at(at, ctx.clock.now())
        after_id = 0
        if after is not None:
            cursor_at, after_id = paging.decode_cursor(after, datetime, int)
            if cursor_at != when:
                raise HTTPException(422, "after: a cursor of a dry run at another `at`")
        async with ctx.pool.acquire() as conn:
            holds = [
                store.holds.hold_from_row(r)
                for r in await store.holds.all_holds(conn)
                if r["released_at"] is None
            ]
            rows = await store.timers.open_timers_page(conn, when, after_id, limit + 1)
            purges = {r["category"]: r for r in await store.purges.next_due(conn, when)}
        page, more = paging.split_page(rows, limit)
        timers = [
            DryRunTimer(
                timer_id=firing.timer.id,
                subject_id=firing.timer.subject_id,
                **domain.dry_run.firing_answer(firing).model_dump(),
            )
            for firing in domain.jobs.due_jobs(page, holds, when)
        ]
        counts = Counter((t.category, t.action, t.reason) for t in timers)
        return DryRunPage(
            at=when,
            subjects=len({t.subject_id for t in timers}),
            counts=[
                DryRunCount(category=c, action=a, reason=r, count=n)
                for (c, a, r), n in sorted(counts.items())
            ],
            timers=timers,
            next=paging.encode_cursor(when, page[-1].id) if more else None,
            rolling=[
                RollingPurges(
                    category=name,
                    owner=ctx.rules.categories[name].owner,
                    keep=str(rule.keep),
                    every=str(rule.every),
                    next_purge=(due := purges[name]["next_due"] if name in purges else None),
                    purges_due=purges[name]["due"] if name in purges else 0,
                    explanation=domain.rolling.rolling_text(name, rule, due),
                )
                for name, rule in ctx.rules.rolling().items()
            ],
        )

    @router.get("/jobs")
    async def jobs(
        overdue: bool | None = None,
        status: str | None = Query(None, pattern="^(issued|completed|failed|cancelled)$"),
        subject_id: str | None = None,
        request_id: str | None = None,
        limit: int = paging.limit_query(),
        after: str | None = paging.after_query(),
    ) -> JobsPage:
        """Jobs by overdue flag, status, subject or request, a page at a time."""
        key = paging.decode_cursor(after, datetime, str) if after is not None else None
        async with ctx.pool.acquire() as conn:
            rows = await store.jobs.list_jobs(
                conn,
                overdue=overdue,
                status=status,
                subject_id=subject_id,
                request_id=request_id,
                limit=limit + 1,
                after=key,
            )
        page, more = paging.split_page(rows, limit)
        last = page[-1] if more else None
        return JobsPage(
            jobs=[Job.model_validate(dict(r)) for r in page],
            next=None if last is None else paging.encode_cursor(last["issued_at"], last["job_id"]),
        )

    @router.get("/requests")
    async def requests_due(
        due_within_days: int = Query(7, ge=0, le=366),
        limit: int = paging.limit_query(),
        after: str | None = paging.after_query(),
    ) -> RequestsPage:
        """Open requests whose deadline is within N days (or already past), soonest first."""
        key = paging.decode_cursor(after, datetime, str) if after is not None else None
        now = ctx.clock.now()
        async with ctx.pool.acquire() as conn:
            rows = await store.requests.open_requests_due_before(
                conn, now + timedelta(days=due_within_days), limit + 1, key
            )
        page, more = paging.split_page(rows, limit)
        last = page[-1] if more else None
        return RequestsPage(
            requests=[
                Request.model_validate({**dict(r), "overdue": r["overdue"] or r["deadline"] < now})
                for r in page
            ],
            next=None
            if last is None
            else paging.encode_cursor(last["deadline"], last["request_id"]),
        )

    @router.get("/requests/{request_id}", responses={404: {"description": "unknown request"}})
    async def request(request_id: str) -> RequestDetail:
        """A request: status, deadline (and extension), outcome per category, its jobs."""
        async with ctx.pool.acquire() as conn:
            req = await store.requests.request(conn, request_id, lock=False)
            if req is None:
                raise HTTPException(404, "unknown request")
            outcomes = await store.requests.outcomes(conn, request_id)
            jobs = await store.jobs.list_jobs(conn, request_id=request_id)
        now = ctx.clock.now()
        overdue = req["overdue"] or domain.requests.is_overdue(req["deadline"], req["status"], now)
        return RequestDetail.model_validate(
            {**dict(req), "overdue": overdue, "outcomes": outcomes, "jobs": [dict(j) for j in jobs]}
        )

    @router.get("/holds")
    async def holds(
        include_released: bool = False,
        limit: int = paging.limit_query(),
        after: str | None = paging.after_query(),
    ) -> HoldsPage:
        """Legal holds, each with what it covers and why, a page at a time."""
        key = paging.decode_cursor(after, datetime, str) if after is not None else None
        async with ctx.pool.acquire() as conn:
            rows = await store.holds.holds_page(conn, include_released, limit + 1, key)
        page, more = paging.split_page(rows, limit)
        last = page[-1] if more else None
        return HoldsPage(
            holds=[
                HoldRecord.model_validate(
                    {**dict(r), "active": r["released_at"] is None, "explanation": _explain(r)}
                )
                for r in page
            ],
            next=None if last is None else paging.encode_cursor(last["placed_at"], last["hold_id"]),
        )

    @router.get("/certificates/verify")
    async def verify() -> ChainCheck:
        """Check the deletion-certificate chain, that every completed deletion has one, and
        (with a checkpoint key) every certificate against the signed checkpoints."""
        async with ctx.pool.acquire() as conn:
            problems = await verify_certificates(conn)
        check = await anchored(ctx, CERTIFICATES.log, certificate_leaves)
        if check is not None and not check.ok:
            problems.append(f"{check.bad_entry}: {check.reason}")
        return ChainCheck(intact=not problems, problems=problems, anchored=check)

    root = APIRouter()
    root.include_router(router)
    root.include_router(checkpoint_router(ctx, CERTIFICATES, certificate_leaves))
    return Api(root)


async def verify_certificates(conn: Any) -> list[str]:
    """Problems with the certificate log: broken links, altered entries, missing certificates."""
    problems = domain.certificates.verify_chain(await store.certificates.chain(conn))
    missing = await store.certificates.uncertified_jobs(conn)
    problems += [f"{j}: completed without a certificate" for j in missing]
    return problems


def _purge_answers(ctx: Context, purges: dict[str, Any], at: datetime) -> list[Any]:
    """The subject's pending purges due by `at`, as dry-run answers."""
    found = []
    for name, rule in ctx.rules.rolling().items():
        row = purges.get(name)
        due = row["due_at"] if row is not None and row["status"] == "pending" else None
        owner = ctx.rules.categories[name].owner
        if (answer := domain.rolling.purge_answer(name, owner, rule, due, at)) is not None:
            found.append(answer)
    return found


def _rolling(ctx: Context, name: str, row: Any) -> dict[str, Any] | None:
    """The category's rolling limit and the subject's next purge (None: no rolling limit)."""
    rule = ctx.rules.categories[name].while_open
    if rule is None:
        return None
    due = row["due_at"] if row is not None and row["status"] == "pending" else None
    return {
        "keep": str(rule.keep),
        "every": str(rule.every),
        "next_purge": due,
        "purges_before": None if due is None else domain.rolling.purge_cutoff(rule, due),
        "status": None if row is None else row["status"],
        "explanation": domain.rolling.rolling_text(name, rule, due),
    }


def _per_category(
    ctx: Context, timers: list[Any], jobs: list[Any], purges: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each category: its rule, the next open timer (or why none), its jobs, rolling limit."""
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
                "rolling": _rolling(ctx, name, purges.get(name)),
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
