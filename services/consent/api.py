"""The consent read API (FastAPI, behind the runtime's bearer token).

FastAPI rather than FastStream's ASGI side: the plumbing's HTTP side (health, readiness,
metrics, bearer auth) is FastAPI already, and query validation and OpenAPI docs come with it.
A decision is one primary-key lookup of the subject's projection row plus a pure decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import AwareDatetime, BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from services.consent import domain, store
from services.consent.domain import SubjectState
from services.consent.handlers import Consent
from services.consent.settings import ConsentSettings
from shared.catalogue import PurposeRule
from shared.plumbing.http import token_ok
from shared.plumbing.service import Background, Runtime


class DecisionOut(BaseModel):
    allowed: bool
    state: str
    basis: str
    reason: str
    since: datetime | None
    reconsent_required: bool = False
    expires_at: datetime | None = None
    at: datetime | None = None


class HistoryOut(BaseModel):
    subject: str
    entries: list[dict[str, Any]]
    next_after: int | None


class ChainOut(BaseModel):
    ok: bool
    checked: int
    broken_at: int | None
    reason: str | None


class ReadPool:
    """A pool for the decision endpoint, opened and closed by a background loop.

    Its connections only run single read-only statements, so they skip asyncpg's reset on
    release (a second round trip per request); until it is open the runtime's pool serves.
    """

    def __init__(self, runtime_pool: Callable[[], asyncpg.Pool]) -> None:
        self._runtime_pool = runtime_pool
        self.pool: asyncpg.Pool | None = None

    def get(self) -> asyncpg.Pool:
        return self.pool or self._runtime_pool()

    def loop(self, settings: ConsentSettings) -> Background:
        """The background loop owning the pool."""

        async def read_pool(runtime: Runtime, stop: asyncio.Event) -> None:
            self.pool = await asyncpg.create_pool(
                settings.database_url.get_secret_value(),
                min_size=1,
                max_size=settings.read_pool_size,
                server_settings={"search_path": settings.db_schema, "timezone": "UTC"},
                reset=_no_reset,
                command_timeout=10,
            )
            try:
                await stop.wait()
            finally:
                pool, self.pool = self.pool, None
                await pool.close()

        return read_pool


async def _no_reset(_: asyncpg.Connection) -> None:
    """Nothing to reset: these connections never change session state."""


def decision_body(decision: domain.Decision, at: datetime | None) -> bytes:
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

    def __init__(
        self, app: ASGIApp, *, consent: Consent, reads: ReadPool, settings: ConsentSettings
    ) -> None:
        self.app = app
        self.consent = consent
        self.reads = reads
        self.expected = settings.api_token.get_secret_value().encode()

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
        if self.consent.catalogue.get(purpose) is None:
            return None
        for name, value in scope["headers"]:
            if name == b"authorization":
                return purpose if token_ok(self.expected, value.decode("latin-1")) else None
        return None

    async def _decide(self, subject: str, purpose: str, send: Send) -> None:
        rule = self.consent.catalogue.get(purpose)
        assert rule is not None
        now = self.consent.clock.now()
        state = await store.load_state(self.reads.get(), subject) or SubjectState(subject)
        body = decision_body(domain.decide(state, purpose, rule, now), None)
        headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def make_api(consent: Consent, runtime: Runtime, reads: ReadPool | None = None) -> APIRouter:
    """The `/v1/subjects/...` routes."""
    router = APIRouter(prefix="/v1/subjects", tags=["consent"])
    reads = reads or ReadPool(lambda: runtime.pool)

    def rule_for(purpose: str) -> PurposeRule:
        rule = consent.catalogue.get(purpose)
        if rule is None:
            known = sorted(consent.catalogue.purposes)
            raise HTTPException(400, {"error": f"unknown purpose {purpose!r}", "known": known})
        return rule

    @router.get("/{subject_id}/decisions", response_model=DecisionOut)
    async def decision(subject_id: str, purpose: str, at: AwareDatetime | None = None) -> Response:
        """May we process this subject for `purpose` now (or, with `at`, at that time)?

        The hot path: one primary-key lookup, a pure decision, JSON written by orjson.
        """
        rule = rule_for(purpose)
        if at is None:
            now = consent.clock.now()
            state = await store.load_state(reads.get(), subject_id) or SubjectState(subject_id)
        else:
            now = at
            principal = consent.principal(subject_id)
            entries = await store.ledger_until(reads.get(), principal, at)
            state = domain.state_at(subject_id, entries, at)
        body = decision_body(domain.decide(state, purpose, rule, now), at)
        return Response(body, media_type="application/json")

    @router.get("/{subject_id}/consent")
    async def current(subject_id: str) -> dict[str, Any]:
        """The subject's full current state (catalogue defaults for an unknown subject)."""
        async with runtime.pool.acquire() as conn:
            state = await store.load_state(conn, subject_id) or SubjectState(subject_id)
        data = domain.state_data(state, consent.catalogue, consent.clock.now())
        return {"subject": subject_id, **data.model_dump(mode="json"), "version": state.version}

    @router.get("/{subject_id}/consent/history")
    async def history(
        subject_id: str,
        limit: int = Query(50, ge=1, le=1000),
        after: int = Query(0, ge=0, description="Return entries after this sequence number."),
    ) -> HistoryOut:
        """The subject's ledger, oldest first, a page at a time."""
        async with runtime.pool.acquire() as conn:
            entries = await store.ledger_page(conn, consent.principal(subject_id), after, limit)
        next_after = entries[-1].seq if len(entries) == limit else None
        return HistoryOut(
            subject=subject_id,
            entries=[domain.entry_record(e) for e in entries],
            next_after=next_after,
        )

    @router.get("/{subject_id}/consent/history/verify")
    async def verify(subject_id: str) -> ChainOut:
        """Check the subject's hash chain (and its personal fields, while the salt exists)."""
        principal = consent.principal(subject_id)
        async with runtime.pool.acquire() as conn:
            entries = await store.ledger(conn, principal)
            head, salt = await store.head(conn, principal)
        check = domain.verify_chain(entries, head, salt)
        return ChainOut(
            ok=check.ok, checked=check.checked, broken_at=check.broken_at, reason=check.reason
        )

    return router
