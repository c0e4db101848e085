"""Admission control: at most `max_in_flight` requests run at once per process; the rest are
refused at once with 503 and `Retry-After` instead of queueing.

Past capacity a process must spend almost nothing on the requests it refuses, or refusing them
becomes the overload: every request that waits in the event loop's queue waits behind all the
others, refused or not. So the refusal happens as early as the server allows:

- `HttpToolsProtocol` is uvicorn's own httptools protocol with the gate checked as soon as a
  request's headers are parsed, before uvicorn builds its ASGI cycle and task: a refused request
  costs its parse and one prebuilt write (about a fifth of the ASGI path; docs/performance.md).
  `python -m shared.plumbing.serve` uses it; under plain `uvicorn` pass
  `--http shared.plumbing.admission:HttpToolsProtocol`.
- `Admission`, the ASGI middleware, applies the same gate for any other server (h11, tests
  over ASGI transports), and counts the requests in flight for both.

The open endpoints (health, readiness, metrics) are never refused, so an overloaded process
still says how it is. One event loop per process, so the counter needs no lock.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as UvicornHttpTools

from shared.plumbing.metrics import HTTP_REFUSED

if TYPE_CHECKING:
    from shared.plumbing.settings import ServiceSettings

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Answered whatever the load: cheap, from memory, and what operators look at when it is high."""
_OPEN_RAW = frozenset(path.encode() for path in OPEN_PATHS)


class Gate:
    """The count of requests in flight in one process, and how a refusal reads."""

    def __init__(self, *, service: str, max_in_flight: int, retry_after: int = 1) -> None:
        self.service = service
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.refused = 0
        self.refusals = HTTP_REFUSED.labels(service, "overloaded")
        self.retry_after = str(retry_after).encode()
        self.body = orjson.dumps(
            {"detail": f"overloaded: {max_in_flight} requests in progress; retry later"}
        )
        self._head = (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nretry-after: %s\r\n" % (len(self.body), self.retry_after)
        )

    @classmethod
    def of(cls, settings: ServiceSettings) -> Gate:
        """The gate a service's settings describe (`http_max_in_flight`, `http_retry_after_s`)."""
        return cls(
            service=settings.service_name,
            max_in_flight=settings.http_max_in_flight,
            retry_after=settings.http_retry_after_s,
        )

    @property
    def full(self) -> bool:
        return self.in_flight >= self.max_in_flight

    def refuse(self) -> None:
        self.refused += 1
        self.refusals.inc()

    def response(self, default_headers: list[tuple[bytes, bytes]], close: bool) -> bytes:
        """The whole 503 response as bytes (uvicorn's date and server headers included)."""
        parts = [self._head]
        parts += [b"%s: %s\r\n" % pair for pair in default_headers]
        if close:
            parts.append(b"connection: close\r\n")
        parts += [b"\r\n", self.body]
        return b"".join(parts)


class Admission:
    """ASGI middleware: at most `gate.max_in_flight` requests at once (open paths aside)."""

    def __init__(self, app: ASGIApp, *, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        gate = self.gate
        if gate.full:
            gate.refuse()
            head = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(gate.body)).encode()),
                (b"retry-after", gate.retry_after),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": head})
            await send({"type": "http.response.body", "body": gate.body})
            return
        gate.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.in_flight -= 1


class _Refused:
    """Stands in for uvicorn's request cycle after a refusal: its response is complete, so the
    request's body (if any) is parsed and dropped."""

    response_complete = True
    disconnected = False

    message_event = asyncio.Event()  # set on disconnect; nobody waits on it


_REFUSED = _Refused()


def expose(app: Any, gate: Gate, settings: ServiceSettings) -> None:
    """Put what `HttpToolsProtocol` checks on the app's state: the gate, and the bound on a
    request's head (the URL and header limits, plus room for the request line)."""
    app.state.gate = gate
    app.state.max_head_bytes = settings.http_max_url_bytes + settings.http_max_header_bytes + 1024


def state_of(app: Any) -> Any:
    """The state of the service app under uvicorn's wrappers (ProxyHeadersMiddleware, …)."""
    for _ in range(8):
        state = getattr(app, "state", None)
        if state is not None:
            return state
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class HttpToolsProtocol(UvicornHttpTools):
    """uvicorn's httptools protocol that refuses past the gate before building an ASGI cycle,
    and closes a connection whose request head (request line and headers) grows past
    `state.max_head_bytes` while it arrives: httptools would buffer it whole before any check."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        state = state_of(self.app)
        gate = getattr(state, "gate", None)
        self.gate = gate if isinstance(gate, Gate) else None
        self.max_head_bytes: int | None = getattr(state, "max_head_bytes", None)
        self.head_bytes: int | None = 0  # bytes of the head being received; None: in a body

    def data_received(self, data: bytes) -> None:
        if self.head_bytes is not None and self.max_head_bytes is not None:
            # only the head's bytes: a read may carry the start of the body after it
            end = data.find(b"\r\n\r\n")
            self.head_bytes += len(data) if end < 0 else end + 4
            if self.head_bytes > self.max_head_bytes:
                self._refuse_head()
                return
        super().data_received(data)

    def _refuse_head(self) -> None:
        detail = f"request line and headers over {self.max_head_bytes} bytes"
        body = orjson.dumps({"detail": detail})
        HTTP_REFUSED.labels(self.gate.service if self.gate else "", "headers_too_large").inc()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()
        self.head_bytes = None

    def on_message_complete(self) -> None:
        self.head_bytes = 0  # the next request's head starts
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        gate = self.gate
        if (
            gate is not None
            and len(self.tasks) >= gate.max_in_flight  # uvicorn's running requests, all connections
            and (self.cycle is None or self.cycle.response_complete)  # not behind a pipelined one
            and not self.parser.should_upgrade()
            and httptools.parse_url(self.url).path not in _OPEN_RAW
        ):
            gate.refuse()
            keep_alive = self.parser.should_keep_alive()
            self.transport.write(gate.response(self.server_state.default_headers, not keep_alive))
            self.cycle = _REFUSED  # type: ignore[assignment]
            if keep_alive:
                self._unset_keepalive_if_required()  # a refusal just before, in the same read
                self.on_response_complete()  # arms the keep-alive timeout, as after any answer
            else:
                self.transport.close()
            return
        super().on_headers_complete()
