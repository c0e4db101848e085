"""Policy changes (policy 3.3): notices to every person before a new policy takes effect, and
from its effective date the grants it asks to renew answer `reconsent_required`.

`policy.published.v1` is kept in `policies` (handlers.on_policy). A loop fans out one
`notice.job.v1` per person to the owner that messages people, a bounded batch per transaction
(a cursor over subject ids, the policy row claimed `FOR UPDATE SKIP LOCKED`), each notice
recorded in the person's ledger. From the effective date the catalogue in force changes, and a
second cursor re-publishes the states of the people it affects.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from services.consent import store
from services.consent.context import SOURCE, Context
from services.consent.handlers import IDS, Unit
from services.consent.ledger import Facts
from services.consent.policies import Policy, affected, in_force, to_renew
from services.consent.state import Change, SubjectState
from shared.contract.events import NoticeJob, NoticeJobData
from shared.plumbing import outbox
from shared.plumbing.db import Conn
from shared.plumbing.loops import Items, Loop
from shared.plumbing.outbox import Outbox

NOTICE = "notice"
POLICIES = "SELECT version, effective_at, summary, url, reconsent_purposes FROM policies"
CLAIM_NOTICES = """
SELECT version, effective_at, summary, url, reconsent_purposes, notice_cursor AS cursor
FROM policies WHERE NOT notices_done ORDER BY published_at, version
LIMIT 1 FOR UPDATE SKIP LOCKED
"""
CLAIM_STATES = """
SELECT version, effective_at, summary, url, reconsent_purposes, state_cursor AS cursor
FROM policies WHERE NOT states_done AND effective_at <= $1 ORDER BY effective_at, version
LIMIT 1 FOR UPDATE SKIP LOCKED
"""
NEXT_SUBJECTS = """
SELECT subject_id FROM subjects WHERE subject_id > $1 ORDER BY subject_id LIMIT $2
"""
SAVE_NOTICES = """
UPDATE policies SET notice_cursor = $2, notices_done = $3, notices_sent = notices_sent + $4
WHERE version = $1
"""
SAVE_STATES = "UPDATE policies SET state_cursor = $2, states_done = $3 WHERE version = $1"


def _policy(row: Any) -> Policy:
    return Policy(
        version=row["version"],
        effective_at=row["effective_at"],
        summary=row["summary"],
        url=row["url"],
        reconsent=tuple(row["reconsent_purposes"]),
    )


async def refresh(ctx: Context, conn: Conn) -> None:
    """Put the catalogue in force now in the context (decisions and published states use it)."""
    policies = [_policy(r) for r in await conn.fetch(POLICIES)]
    current = in_force(ctx.base_catalogue or ctx.catalogue, policies, ctx.now())
    if current != ctx.catalogue:
        ctx.catalogue = current


def notice_job_id(version: str, subject: str) -> str:
    """One notice per person and policy version, whatever replays or retries happen."""
    return "job_" + uuid.uuid5(IDS, f"notice/{version}/{subject}").hex


def notice_event(ctx: Context, policy: Policy, subject: str, renew: list[str]) -> NoticeJob:
    job_id = notice_job_id(policy.version, subject)
    now = ctx.now()
    return NoticeJob(
        id=str(uuid.uuid5(IDS, job_id)),
        source=SOURCE,
        subject=subject,
        time=now,
        data=NoticeJobData(
            job_id=job_id,
            owner=ctx.settings.notice_owner,
            policy_version=policy.version,
            effective_at=policy.effective_at,
            summary=policy.summary,
            url=policy.url,
            reconsent_purposes=renew,
            due_by=now + ctx.settings.notice_due,
        ),
    )


async def _batch(
    ctx: Context, conn: Conn, cursor: str
) -> tuple[list[str], dict[str, SubjectState]]:
    """The next subjects after `cursor` (locked as the pipeline locks them) and their states."""
    limit = ctx.settings.notice_batch
    subjects = [r["subject_id"] for r in await conn.fetch(NEXT_SUBJECTS, cursor, limit)]
    if not subjects:
        return subjects, {}
    await store.lock_subjects(conn, subjects)
    states = await store.load_states(conn, subjects)
    return subjects, {s: states[s] for s in subjects if s in states}  # erased meanwhile: gone


async def _advance(
    ctx: Context, conn: Conn, sql: str, version: str, cursor: str, listed: list[str], *more: Any
) -> bool:
    """Move the policy's cursor past `listed`; True while more subjects may follow."""
    done = len(listed) < ctx.settings.notice_batch
    await conn.execute(sql, version, listed[-1] if listed else cursor, done, *more)
    return not done


async def notice_round(ctx: Context, conn: Conn) -> bool:
    """Notify the next batch of people of the oldest policy not yet told; True if more wait."""
    row = await conn.fetchrow(CLAIM_NOTICES)
    if row is None:
        return False
    policy, base = _policy(row), ctx.base_catalogue or ctx.catalogue
    listed, states = await _batch(ctx, conn, row["cursor"])
    unit = Unit(ctx, ctx.now(), Outbox())
    for subject, state in states.items():
        renew = to_renew(state, policy, base)
        event = notice_event(ctx, policy, subject, renew)
        unit.outbox.publish(ctx.settings.topics.privacy_jobs, event)
        note = f"notice of policy {policy.version} sent to {ctx.settings.notice_owner}"
        if renew:
            note += f"; asks to renew: {', '.join(renew)}"
        facts = Facts(
            event.data.job_id, SOURCE, event.type, unit.now, policy_version=policy.version
        )
        unit.record(subject, facts, [Change(NOTICE, "policy", "", "sent", True, note)])
    await unit.flush(conn)
    await outbox.write(conn, unit.outbox.rows, ctx.settings.db_schema)
    return await _advance(
        ctx, conn, SAVE_NOTICES, policy.version, row["cursor"], listed, len(states)
    )


async def state_round(ctx: Context, conn: Conn) -> bool:
    """From a policy's effective date, re-publish the states it changes, a batch at a time."""
    row = await conn.fetchrow(CLAIM_STATES, ctx.now())
    if row is None:
        return False
    policy, base = _policy(row), ctx.base_catalogue or ctx.catalogue
    listed, states = await _batch(ctx, conn, row["cursor"])
    unit = Unit(ctx, ctx.now(), Outbox())
    for subject in affected(list(states.values()), policy, base):
        state = states[subject]
        unit.changed(replace(state, version=state.version + 1))
    await unit.flush(conn)
    await outbox.write(conn, unit.outbox.rows, ctx.settings.db_schema)
    return await _advance(ctx, conn, SAVE_STATES, policy.version, row["cursor"], listed)


async def policy_round(ctx: Context, _: Items) -> bool:
    """One round: the catalogue in force, one batch of notices, one batch of states."""
    async with ctx.pool.acquire() as conn:
        await refresh(ctx, conn)
        async with conn.transaction():
            more_notices = await notice_round(ctx, conn)
        async with conn.transaction():
            more_states = await state_round(ctx, conn)
    return more_notices or more_states


NOTICES: Loop[Context] = Loop(
    "consent-policy-notices", policy_round, lambda ctx: ctx.settings.notice_interval_s
)
