"""Bounded HTTP input and admission control on every service's app (issue #23).

The app is a real `Runtime.asgi()` (not started: the limits answer before any route, and the
toy route needs no database); requests go through httpx's in-process ASGI transport, or, for
the refusal in uvicorn's protocol, over TCP to uvicorn serving it as `shared.plumbing.serve` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaRouter
from starlette.types import Receive, Scope, Send

from shared.plumbing.admission import HttpToolsProtocol
from shared.plumbing.context import ServiceContext
from shared.plumbing.handlers import Handlers, plain_tx
from shared.plumbing.service import Api, Runtime, ServiceSpec
from shared.plumbing.settings import ServiceSettings
from tests.support.ports import free_ports

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
    transport = httpx.ASGITransport(app=toy_app(held, **settings))
    return httpx.AsyncClient(transport=transport, base_url="http://toy")


def toy_app(held: Held, **settings: int) -> FastAPI:
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
    return Runtime(spec).asgi()


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


class Counting:
    """The served app behind a counter of the requests that reached it (uvicorn's wrappers
    reach the app's gate through `.app`, as they do)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def served(app: Counting) -> AsyncIterator[int]:
    """uvicorn serving `app` on a free loopback port with admission's protocol; the port."""
    port = free_ports(1)[0]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=HttpToolsProtocol, lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # started within 10 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    else:
        raise TimeoutError("uvicorn did not start")
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request on a kept-alive connection; status, headers and body back."""
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0][9:12]), headers, body


async def closed(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "host: toy", f"authorization: Bearer {TOKEN}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_uvicorns_protocol_refuses_past_the_gate_before_the_app_and_keeps_the_connection():
    held = Held()
    app = Counting(toy_app(held, http_max_in_flight=2, http_retry_after_s=3))
    gate = app.app.state.gate
    async with served(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
        first = asyncio.create_task(c.get("/v1/held", headers=AUTH))
        second = asyncio.create_task(c.get("/v1/held", headers=AUTH))
        while held.entered < 2:
            held.arrived.clear()
            await held.arrived.wait()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, body = await exchange(reader, writer, get("/v1/held"))
        assert status == 503
        assert headers["retry-after"] == "3"
        assert "date" in headers
        assert "connection" not in headers  # kept alive
        assert orjson.loads(body)["detail"] == "overloaded: 2 requests in progress; retry later"
        assert app.calls == 2  # the refused request never reached the ASGI app
        # a body sent with a refused request is read and dropped: the next request parses
        post = b'POST /v1/echo HTTP/1.1\r\nhost: toy\r\ncontent-length: 10\r\n\r\n{"a": "b"}'
        assert (await exchange(reader, writer, post))[0] == 503
        health = await exchange(reader, writer, get("/healthz"))  # open paths are never refused
        assert health[0] == 200
        assert gate.refused == 2
        held.release.set()
        assert [(await t).status_code for t in (first, second)] == [200, 200]
        status, _, body = await exchange(reader, writer, get("/v1/held"))
        assert (status, orjson.loads(body)) == (200, {"ok": True})
        await closed(writer)
        await writer.wait_closed()


async def test_a_refused_request_that_asked_to_close_gets_its_connection_closed():
    held = Held(hold=1)
    app = Counting(toy_app(held, http_max_in_flight=1))
    async with served(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
        first = asyncio.create_task(c.get("/v1/held", headers=AUTH))
        await held.arrived.wait()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, _ = await exchange(reader, writer, get("/v1/held", "connection: close"))
        assert (status, headers["connection"]) == (503, "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        await closed(writer)
        held.release.set()
        assert (await first).status_code == 200


async def test_a_request_head_growing_past_the_limits_is_cut_off_while_it_arrives():
    """httptools would buffer a header block whole before any check: the protocol counts the
    head's bytes as they come and answers 431 and closes past the URL and header limits, with
    the head still unfinished (plain uvicorn would wait for the rest of it)."""
    app = Counting(toy_app(Held(hold=0), http_max_header_bytes=2048, http_max_url_bytes=256))
    async with served(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/held HTTP/1.1\r\nhost: toy\r\nx-filler: " + b"y" * 8192)
        answer = await asyncio.wait_for(reader.read(), 5)  # the head never ended
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert b"connection: close" in answer
        assert b"request line and headers over 3328 bytes" in answer
        assert app.calls == 0
        await closed(writer)
        # a head under the limits is served as before on a new connection, and a body sent in
        # the same write as the head does not count toward the head
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, _, _ = await exchange(reader, writer, get("/v1/held", "x-filler: " + "y" * 1000))
        assert status == 200
        body = orjson.dumps({"a": "x" * 100_000})
        post = (
            f"POST /v1/echo HTTP/1.1\r\nhost: toy\r\nauthorization: Bearer {TOKEN}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        status, _, answer = await exchange(reader, writer, post + body)
        assert (status, orjson.loads(answer)) == (200, {"names": 1})
        await closed(writer)
