"""The consent read API (FastAPI, behind the runtime's bearer token).

FastAPI rather than FastStream's ASGI side: the plumbing's HTTP side (health, readiness,
metrics, bearer auth) is FastAPI already, and query validation and OpenAPI docs come with it.
A decision is one primary-key lookup of the subject's projection row plus a pure decision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import AwareDatetime, BaseModel, Field
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from services.consent import decisions, fastpath, ledger, pseudonyms, store
from services.consent.checkpoints import LEDGER, ledger_leaves
from services.consent.context import Context
from services.consent.state import SubjectState
from shared.catalogue import PurposeRule
from shared.contract.events import Purpose, PurposeState
from shared.evidence.api import checkpoint_router
from shared.plumbing.http import api_tokens, token_ok
from shared.plumbing.service import Api


class DecisionOut(BaseModel):
    """May the subject be processed for the purpose (now, or at `at`), and why."""

    allowed: bool
    state: str
    basis: str
    reason: str
    since: datetime | None
    reconsent_required: bool = False
    expires_at: datetime | None = None
    at: datetime | None = None


class ConsentOut(BaseModel):
    """The subject's current state: every catalogue purpose (defaults for one never seen)."""

    subject: str
    version: int = Field(description="The subject's state version; 0 for one never seen.")
    purposes: dict[Purpose, PurposeState]
    restrictions: list[str]
    objections: list[str]
    gpc: bool


class LedgerRecord(BaseModel):
    """A consent-ledger entry; times are UTC ISO 8601 strings, as hashed into the chain."""

    principal: str
    seq: int
    event_id: str
    event_source: str
    event_type: str
    kind: str
    target: str
    old_state: str
    new_state: str
    applied: bool
    note: str | None
    collection_method: str | None
    consent_type: str | None
    policy_version: str | None
    notice_id: str | None
    jurisdiction: str | None
    expires_at: str | None
    occurred_at: str
    received_at: str
    personal_digest: str | None
    prev_hash: str
    hash: str
    subject_id: str | None = Field(description="null once the subject was erased.")
    evidence: dict[str, Any] | None
    kid: str = Field(
        "legacy", description="Id of the pseudonym key `principal` was made with (not hashed)."
    )


class HistoryOut(BaseModel):
    """A page of the subject's ledger, oldest first."""

    subject: str
    entries: list[LedgerRecord]
    next_after: int | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class ChainOut(BaseModel):
    """Whether the subject's ledger hash chain verifies, and where it breaks."""

    ok: bool
    checked: int
    broken_at: int | None
    reason: str | None


UNKNOWN_PURPOSE: dict[int | str, dict[str, Any]] = {
    400: {"description": "Unknown purpose: `detail` has `error` and the `known` purposes."}
}


def decision_body(decision: decisions.Decision, at: datetime | None) -> bytes:
    """The decision endpoint's JSON."""
    return orjson.dumps(
        {
            "allowed": decision.allowed,
            "state": decision.state,
            "basis": decision.basis,
            "reason": decision.reason,
            "since": decision.since,
            "reconsent_required": decision.reconsent_required,
            "expires_at": decision.expires_at,
            "at": at,
        }
    )


DECISIONS_PREFIX, DECISIONS_SUFFIX = "/v1/subjects/", "/decisions"
JSON_HEADERS = [(b"content-type", b"application/json")]


class FastDecisions:
    """A plain ASGI front for the hot call, `GET /v1/subjects/{id}/decisions?purpose=P`.

    It answers only the ordinary case (valid bearer token, `purpose` the one query parameter and
    a known one) with the same body as the FastAPI route, skipping routing, dependency solving
    and query validation; anything else (a bad token, `at`, an unknown purpose, other
    parameters) goes on to the FastAPI app unchanged, which answers it as before.
    """

    def __init__(self, app: ASGIApp, *, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx
        self.expected = api_tokens(ctx.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(DECISIONS_PREFIX) and path.endswith(DECISIONS_SUFFIX):
                subject = path[len(DECISIONS_PREFIX) : -len(DECISIONS_SUFFIX)]
                purpose = self._ordinary(scope, subject)
                if purpose is not None:
                    await self._decide(subject, purpose, send)
                    return
        await self.app(scope, receive, send)

    def _ordinary(self, scope: Scope, subject: str) -> str | None:
        """The purpose of an authorised ordinary request, else None."""
        if not subject or "/" in subject:
            return None
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        if len(query) != 1 or query[0][0] != "purpose":
            return None
        purpose: str = query[0][1]
        if self.ctx.catalogue.get(purpose) is None:
            return None
        for name, value in scope["headers"]:
            if name == b"authorization":
                return purpose if token_ok(self.expected, value.decode("latin-1")) else None
        return None

    async def _decide(self, subject: str, purpose: str, send: Send) -> None:
        rule = self.ctx.catalogue.get(purpose)
        assert rule is not None
        now = self.ctx.now()
        state = await store.load_state(self.ctx.read_pool(), subject) or SubjectState(subject)
        body = decision_body(decisions.decide(state, purpose, rule, now), None)
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def make_api(ctx: Context) -> Api:
    """The `/v1/subjects/...` routes, with the decision hot path in front of them."""
    router = APIRouter(prefix="/v1/subjects", tags=["consent"])

    def rule_for(purpose: str) -> PurposeRule:
        rule = ctx.catalogue.get(purpose)
        if rule is None:
            known = sorted(ctx.catalogue.purposes)
            raise HTTPException(400, {"error": f"unknown purpose {purpose!r}", "known": known})
        return rule

    @router.get("/{subject_id}/decisions", response_model=DecisionOut, responses=UNKNOWN_PURPOSE)
    async def decision(subject_id: str, purpose: str, at: AwareDatetime | None = None) -> Response:
        """May we process this subject for `purpose` now (or, with `at`, at that time)?

        The hot path: one primary-key lookup, a pure decision, JSON written by orjson.
        """
        rule = rule_for(purpose)
        if at is None:
            now = ctx.now()
            state = await store.load_state(ctx.read_pool(), subject_id) or SubjectState(subject_id)
        else:
            now = at
            async with ctx.read_pool().acquire() as conn:
                principal = await pseudonyms.principal(conn, ctx.keys, subject_id)
                entries = await store.ledger_until(conn, principal, at)
            state = ledger.state_at(subject_id, entries, at)
        body = decision_body(decisions.decide(state, purpose, rule, now), at)
        return Response(body, media_type="application/json")

    @router.get("/{subject_id}/consent")
    async def current(subject_id: str) -> ConsentOut:
        """The subject's full current state (catalogue defaults for an unknown subject)."""
        async with ctx.pool.acquire() as conn:
            state = await store.load_state(conn, subject_id) or SubjectState(subject_id)
        data = fastpath.state_data(state, ctx.catalogue, ctx.now())
        return ConsentOut(
            subject=subject_id,
            version=state.version,
            purposes=data.purposes,
            restrictions=data.restrictions,
            objections=data.objections,
            gpc=data.gpc,
        )

    @router.get("/{subject_id}/consent/history")
    async def history(
        subject_id: str,
        limit: int = Query(50, ge=1, le=1000),
        after: int = Query(0, ge=0, description="Return entries after this sequence number."),
    ) -> HistoryOut:
        """The subject's ledger, oldest first, a page at a time."""
        async with ctx.pool.acquire() as conn:
            principal = await pseudonyms.principal(conn, ctx.keys, subject_id)
            entries = await store.ledger_page(conn, principal, after, limit)
        next_after = entries[-1].seq if len(entries) == limit else None
        return HistoryOut(
            subject=subject_id,
            entries=[LedgerRecord.model_validate(ledger.entry_record(e)) for e in entries],
            next_after=next_after,
        )

    @router.get("/{subject_id}/consent/history/verify")
    async def verify(subject_id: str) -> ChainOut:
        """Check the subject's hash chain (and its personal fields, while the salt exists)."""
        async with ctx.pool.acquire() as conn:
            principal = await pseudonyms.principal(conn, ctx.keys, subject_id)
            entries = await store.ledger(conn, principal)
            head, salt = await store.head(conn, principal)
        check = ledger.verify_chain(entries, head, salt)
        return ChainOut(
            ok=check.ok, checked=check.checked, broken_at=check.broken_at, reason=check.reason
        )

    root = APIRouter()
    root.include_router(router)
    root.include_router(checkpoint_router(ctx, LEDGER, ledger_leaves))
    return Api(root, middleware=[Middleware(FastDecisions, ctx=ctx)])
