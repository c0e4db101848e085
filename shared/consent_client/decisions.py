"""Ask the consent service for one decision over HTTP, for services that ask per call instead
of following `consent.state`.

    async with DecisionsClient("https://consent:8001", token, cafile="/etc/pp/ca.pem") as consent:
        decision = await consent.decide("usr_42", "marketing_email")
        if decision.allowed:
            ...

Each call is `GET /v1/subjects/{subject}/decisions?purpose=P[&at=T]` with the bearer token,
bounded by `timeout` seconds in all (connect, send, wait, read). An https certificate that
`cafile` (or the system) does not trust raises httpx.ConnectError (CERTIFICATE_VERIFY_FAILED).
"""

from __future__ import annotations

import asyncio
import ssl
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict


class Decision(BaseModel):
    """The consent service's answer: may the subject be processed for the purpose, and why."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    allowed: bool
    state: str
    basis: str
    reason: str
    since: AwareDatetime | None
    reconsent_required: bool = False
    expires_at: AwareDatetime | None = None
    at: AwareDatetime | None = None


class DecisionError(Exception):
    """The consent service refused the question (a 4xx or 5xx), with its own message.

    `retry_after` is the server's `Retry-After` in seconds when it gave one: a 503 from
    admission control (the service is past capacity) says when to ask again; retrying sooner
    only adds to the overload.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"consent decisions: {status} {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class DecisionsClient:
    """A small typed client of the consent decisions API (httpx, one connection pool)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 2.0,
        cafile: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`timeout` bounds each decision in seconds; `cafile` is the CA that signed an https
        service's certificate (default: the system's CAs); `transport` is for tests and proxies."""
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            verify=ssl.create_default_context(cafile=cafile) if cafile else True,
            transport=transport,
        )

    async def decide(self, subject: str, purpose: str, at: datetime | None = None) -> Decision:
        """The decision for `purpose` now (or at `at`, an aware date-time).

        Raises DecisionError on a refusal (401: bad token, 400: unknown purpose, 503 with
        `retry_after`: past capacity, ...), TimeoutError past `timeout`, httpx.TransportError
        when the service cannot be reached.
        """
        params = {"purpose": purpose}
        if at is not None:
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError("at must be an aware date-time")
            params["at"] = at.isoformat()
        path = f"/v1/subjects/{quote(subject, safe='')}/decisions"
        async with asyncio.timeout(self.timeout):
            response = await self._http.get(path, params=params)
        if response.status_code != 200:
            retry_after = _seconds(response.headers.get("retry-after"))
            raise DecisionError(response.status_code, _message(response), retry_after)
        return Decision.model_validate_json(response.content)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> DecisionsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _seconds(value: str | None) -> float | None:
    """A `Retry-After` in delay-seconds (the form the services send); None otherwise."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _message(response: httpx.Response) -> str:
    """The server's own words: FastAPI's `detail` (a text, or {error, known}), else the body."""
    try:
        detail: Any = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, dict) and "error" in detail:
        known = detail.get("known")
        return str(detail["error"]) + (f" (known: {', '.join(map(str, known))})" if known else "")
    if detail is not None:
        return str(detail)
    return response.text[:300] or response.reason_phrase
