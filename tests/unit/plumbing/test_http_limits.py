"""Bounded HTTP input and admission control on every service's app (issue #23).

The app is a real `Runtime.asgi()` (not started: the limits answer before any route, and the
toy route needs no database); requests go through httpx's in-process ASGI transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from faststream.kafka import KafkaRouter

from shared.plumbing.context import ServiceContext
from shared.plumbing.handlers import Handlers, plain_tx
from shared.plumbing.service import Api, Runtime, ServiceSpec
from shared.plumbing.settings import ServiceSettings

TOKEN = "limits-t0ken-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}


class Held:
    """A route that waits until released: requests stay in flight for as long as a test says."""

    def __init__(self, hold: int = 2) -> None:
        self.hold = hold
        self.release = asyncio.Event()
        self.entered = 0
        self.arrived = asyncio.Event()

    def api(self, _: ServiceContext) -> Api:
        router = APIRouter()

        @router.get("/v1/held")
        async def held() -> dict[str, bool]:
            self.entered += 1
            self.arrived.set()
            if self.entered <= self.hold:  # later ones answer at once, so nothing hangs
                await self.release.wait()
            return {"ok": True}

        @router.post("/v1/echo")
        async def echo(body: dict[str, str]) -> dict[str, int]:
            return {"names": len(body)}

        return Api(private=router)


def app(held: Held, **settings: int) -> httpx.AsyncClient:
    spec = ServiceSpec(
        name="toy",
        context=ServiceContext(
            settings=ServiceSettings(
                service_name="toy",
                kafka_bootstrap_servers="127.0.0.1:1",
                database_url="postgresql://unused@127.0.0.1:1/none",
                db_schema="toy",
                api_token=TOKEN,
                **settings,  # type: ignore[arg-type]
            )
        ),
        migrations=Path("."),
        inbound=KafkaRouter(),
        handlers=Handlers({}, begin=plain_tx),
        publishes={},
        api=held.api,
    )
    transport = httpx.ASGITransport(app=Runtime(spec).asgi())
    return httpx.AsyncClient(transport=transport, base_url="http://toy")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app(
        Held(hold=0), http_max_url_bytes=256, http_max_header_bytes=2048, http_max_body_bytes=1024
    ) as c:
        yield c


async def test_a_long_query_string_or_path_is_refused_with_414(client: httpx.AsyncClient):
    answer = await client.get("/v1/held", params={"q": "x" * 300}, headers=AUTH)
    assert answer.status_code == 414
    assert "query string of 310 bytes, over the limit of 256" in answer.json()["detail"]
    long_path = await client.get("/v1/subjects/" + "s" * 300 + "/consent", headers=AUTH)
    assert long_path.status_code == 414


async def test_large_headers_are_refused_with_431(client: httpx.AsyncClient):
    answer = await client.get("/healthz", headers={"x-filler": "y" * 3000})
    assert answer.status_code == 431
    assert "over the limit of 2048" in answer.json()["detail"]


async def test_a_large_body_is_refused_with_413_declared_or_streamed(client: httpx.AsyncClient):
    declared = await client.post("/v1/echo", content=b"{" + b" " * 2000 + b"}", headers=AUTH)
    assert declared.status_code == 413
    assert "over the limit of 1024" in declared.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"a": "'
        for _ in range(20):
            yield b"z" * 100
        yield b'"}'

    streamed = await client.post("/v1/echo", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413
    small = await client.post("/v1/echo", json={"a": "b"}, headers=AUTH)
    assert small.status_code == 200


async def test_past_the_in_flight_limit_requests_are_refused_at_once_and_health_still_answers():
    held = Held()
    async with app(held, http_max_in_flight=2, http_retry_after_s=3) as client:
        first = asyncio.create_task(client.get("/v1/held", headers=AUTH))
        second = asyncio.create_task(client.get("/v1/held", headers=AUTH))
        while held.entered < 2:  # both inside the route, held there
            held.arrived.clear()
            await held.arrived.wait()
        refused = await client.get("/v1/held", headers=AUTH)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"
        assert "overloaded" in refused.json()["detail"]
        assert held.entered == 2  # never reached the route, nor waited for it
        for path in ("/healthz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        held.release.set()
        assert [(await t).status_code for t in (first, second)] == [200, 200]
        assert (await client.get("/v1/held", headers=AUTH)).status_code == 200
