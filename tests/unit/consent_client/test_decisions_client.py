"""DecisionsClient against a stand-in server: the request it makes, the answers it raises."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from shared.consent_client import Decision, DecisionError, DecisionsClient

ANSWER = {
    "allowed": True,
    "state": "granted",
    "basis": "consent",
    "reason": "granted",
    "since": "2026-11-26T09:01:00+00:00",
    "reconsent_required": False,
    "expires_at": None,
    "at": None,
}


def client(handler, **kw) -> DecisionsClient:
    return DecisionsClient("http://consent/", "tok", transport=httpx.MockTransport(handler), **kw)


async def test_a_decision_is_asked_with_the_token_and_parsed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    async with client(handler) as consent:
        decision = await consent.decide("usr 1/x", "marketing_email")
        at = datetime(2026, 12, 1, tzinfo=UTC)
        await consent.decide("usr_1", "marketing_email", at=at)
        with pytest.raises(ValueError, match="aware"):
            await consent.decide("usr_1", "marketing_email", at=datetime(2026, 12, 1))
    assert decision == Decision(
        allowed=True,
        state="granted",
        basis="consent",
        reason="granted",
        since=datetime(2026, 11, 26, 9, 1, tzinfo=UTC),
    )
    assert seen[0].url.raw_path == b"/v1/subjects/usr%201%2Fx/decisions?purpose=marketing_email"
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert dict(seen[1].url.params) == {"purpose": "marketing_email", "at": at.isoformat()}
    assert len(seen) == 2  # the naive date-time never left


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"detail": "missing or invalid bearer token"}, "missing or invalid bearer token"),
        (
            400,
            {"detail": {"error": "unknown purpose 'telepathy'", "known": ["a", "b"]}},
            "unknown purpose 'telepathy' (known: a, b)",
        ),
        (503, None, "Service Unavailable"),
    ],
)
async def test_a_refusal_raises_with_the_servers_message(status, body, message) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if body else httpx.Response(status)

    async with client(handler) as consent:
        with pytest.raises(DecisionError) as raised:
            await consent.decide("usr_1", "telepathy")
    assert (raised.value.status, raised.value.message) == (status, message)
    assert str(raised.value) == f"consent decisions: {status} {message}"


async def test_a_slow_answer_times_out_after_the_whole_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=ANSWER)

    async with client(handler, timeout=0.1) as consent:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await consent.decide("usr_1", "marketing_email")
    assert asyncio.get_running_loop().time() - started < 1


async def test_a_refusal_past_capacity_says_when_to_ask_again() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        detail = {"detail": "overloaded: 12 requests in progress; retry later"}
        return httpx.Response(503, json=detail, headers={"retry-after": "2"})

    async with client(handler) as consent:
        with pytest.raises(DecisionError) as refused:
            await consent.decide("usr_1", "marketing_email")
    assert (refused.value.status, refused.value.retry_after) == (503, 2.0)
    assert "overloaded" in refused.value.message
