"""Bounded HTTP input, as plain ASGI middleware in front of every service (after admission
control, `shared.plumbing.admission`).

`RequestLimits` refuses a request whose path and query string (414), headers (431) or body
(413) is over its setting before any route sees it; a body is counted as it arrives, so a
chunked upload without `Content-Length` cannot grow past the limit either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.plumbing.admission import Admission, Gate
from shared.plumbing.metrics import HTTP_REFUSED

if TYPE_CHECKING:
    from shared.plumbing.settings import ServiceSettings


@dataclass(frozen=True)
class HttpLimits:
    """The bounds on one request (settings `http_max_*`)."""

    max_body_bytes: int = 1024 * 1024
    max_url_bytes: int = 4096
    max_header_bytes: int = 16 * 1024


def front(settings: ServiceSettings, gate: Gate) -> list[Middleware]:
    """The middleware every service puts first: admission control (`gate`), then input bounds."""
    limits = HttpLimits(
        max_body_bytes=settings.http_max_body_bytes,
        max_url_bytes=settings.http_max_url_bytes,
        max_header_bytes=settings.http_max_header_bytes,
    )
    service = settings.service_name
    return [
        Middleware(Admission, gate=gate),
        Middleware(RequestLimits, service=service, limits=limits),
    ]


async def refuse(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    """Answer `status` with a JSON `detail` (FastAPI's error shape) and close nothing else."""
    body = orjson.dumps({"detail": detail})
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised inside `receive` once a body passes the limit (answered 413 if nothing was sent)."""


class RequestLimits:
    """414, 431 or 413 for a path and query string, header block or body past `limits`."""

    def __init__(self, app: ASGIApp, *, service: str, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lim = self.limits
        raw_path = scope.get("raw_path") or scope["path"].encode()
        url = len(raw_path) + len(scope.get("query_string", b""))
        if url > lim.max_url_bytes:
            detail = f"path and query string of {url} bytes, over the limit of {lim.max_url_bytes}"
            await self._refuse(send, 414, "url_too_long", detail)
            return
        headers = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if headers > lim.max_header_bytes:
            detail = f"headers of {headers} bytes, over the limit of {lim.max_header_bytes}"
            await self._refuse(send, 431, "headers_too_large", detail)
            return
        declared, chunked = _body_framing(scope)
        if declared is not None and declared > lim.max_body_bytes:
            await self._refuse(send, 413, "body_too_large", self._body_detail(declared))
            return
        if declared is None and not chunked:  # HTTP/1.1: no body follows (the hot GETs)
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _refuse(self, send: Send, status: int, reason: str, detail: str) -> None:
        HTTP_REFUSED.labels(self.service, reason).inc()
        # the rest of an oversize body is not read: close rather than parse it as a request
        close = [(b"connection", b"close")] if reason == "body_too_large" else []
        await refuse(send, status, detail, close)

    def _body_detail(self, size: int) -> str:
        return f"body of {size} bytes or more, over the limit of {self.limits.max_body_bytes}"

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with the body counted as it arrives: past the limit, the app's reading
        fails and whatever it answers (FastAPI: 400, a body it could not read) becomes 413."""
        received = 0
        over = started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limits.max_body_bytes:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                started = True
                await self._refuse(send, 413, "body_too_large", self._body_detail(received))
            if over:
                return  # the app's own answer to a body it could not read is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not started:  # the app let the refusal through: answer 413 ourselves
                await guarded_send({"type": "http.response.start"})


def _body_framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared `Content-Length` (None: absent or unreadable) and whether the body is sent
    in chunks (`Transfer-Encoding`): with neither, an HTTP/1.1 request has no body."""
    declared, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                chunked = True  # unreadable: count what arrives
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked
