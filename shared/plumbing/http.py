"""The HTTP side every service shares: bearer auth, health, readiness, metrics, AsyncAPI."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.contract import __version__ as contract_version
from shared.plumbing.keyring import keyring
from shared.plumbing.settings import ServiceSettings

if TYPE_CHECKING:
    from shared.plumbing.service import Runtime


def token_ok(expected: bytes | tuple[bytes, ...], authorization: str) -> bool:
    """Whether an Authorization header value carries one of the bearer tokens `expected`.

    The one check of the API token, in constant time: FastAPI routes (`bearer`) and plain
    ASGI fronts (consent's decisions) both use it. Every listed token is compared (no early
    exit), so the time taken does not say which one matched, nor how far.
    """
    scheme, _, token = authorization.partition(" ")
    presented = token.encode()
    ok = False
    for candidate in (expected,) if isinstance(expected, bytes) else expected:
        ok |= hmac.compare_digest(presented, candidate)
    return scheme.lower() == "bearer" and ok


def api_tokens(settings: ServiceSettings) -> tuple[bytes, ...]:
    """Every API token the settings list (a keyring: several are valid during a rotation)."""
    return tuple(key.encoded() for key in keyring(settings.api_token))


BEARER = HTTPBearer(
    scheme_name="bearer",
    description="The service's API token (API_TOKEN): `Authorization: Bearer <token>`.",
    auto_error=False,  # `bearer` answers a missing or wrong token itself, with its own detail
)
DECLARED = Security(BEARER)
UNAUTHORISED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token (`WWW-Authenticate: Bearer`)."}
}
API_VERSION = contract_version
"""The contract's version, in the OpenAPI and AsyncAPI documents' `info.version`."""


def bearer(settings: ServiceSettings) -> Any:
    """A dependency that refuses a missing or wrong bearer token with 401.

    It declares the HTTP bearer scheme (so OpenAPI shows it on the routes it guards) but checks
    the header itself with `token_ok`, keeping the 401, its detail and `WWW-Authenticate`.
    """
    expected = api_tokens(settings)

    async def check(request: Request, _: HTTPAuthorizationCredentials | None = DECLARED) -> None:
        if not token_ok(expected, request.headers.get("authorization", "")):
            raise HTTPException(
                status_code=401,
                detail="missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return Depends(check)


def ops_router(runtime: Runtime[Any]) -> APIRouter:
    """Open endpoints (keep them on the internal network): health, readiness, metrics."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> Response:
        """Broker and database reachable, migrations applied: from the latest background
        check (at most a second old), ok / not ok per dependency and nothing else."""
        state = runtime.readiness
        ready = runtime.started and state.ready
        body = {"ready": ready, "checks": state.public()}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def docs_router(runtime: Runtime[Any], app: FastAPI) -> APIRouter:
    """API documents: AsyncAPI and OpenAPI (behind the bearer token like the read API)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs/asyncapi.json")
    async def asyncapi_json() -> Response:
        return Response(asyncapi_schema(runtime), media_type="application/json")

    @router.get("/docs/asyncapi")
    async def asyncapi_html() -> HTMLResponse:
        from faststream.specification.asyncapi.site import get_asyncapi_html

        return HTMLResponse(get_asyncapi_html(_specification(runtime)))

    return router


def _specification(runtime: Runtime[Any]) -> Any:
    from faststream.specification import AsyncAPI

    return AsyncAPI(
        runtime.broker,
        title=f"Privacy Plane {runtime.spec.name}",
        version=API_VERSION,
        description="Events this service consumes and publishes (CloudEvents 1.0, JSON).",
    ).to_specification()  # FastStream 0.7: the factory builds the schema object


def asyncapi_schema(runtime: Runtime[Any]) -> str:
    """The service's AsyncAPI document as JSON."""
    return str(_specification(runtime).to_json())


def ops_details_router(runtime: Runtime[Any]) -> APIRouter:
    """Readiness with its reasons, for operators (behind the bearer token)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/v1/ops/readiness")
    async def readiness_details() -> dict[str, Any]:
        state = runtime.readiness
        return {"ready": runtime.started and state.ready, "problems": state.problems}

    return router
