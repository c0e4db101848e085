"""Run a service's HTTP side under uvicorn, serving HTTPS when its settings name a certificate.

    python -m shared.plumbing.serve services.consent.app:create --host 0.0.0.0 --port 8000

The same as `uvicorn --factory services.consent.app:create --http
shared.plumbing.admission:HttpToolsProtocol …` (admission control refuses past capacity before
uvicorn builds a request's ASGI cycle), plus uvicorn's TLS options taken from the service's own
settings (`<P>HTTP_TLS_CERTFILE`, `<P>HTTP_TLS_KEYFILE`), so one environment says whether the
API is HTTPS. Without them it serves plain HTTP (behind a TLS-terminating proxy, for example).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.importer import import_from_string

from shared.plumbing.admission import HttpToolsProtocol
from shared.plumbing.settings import ServiceSettings


def tls_options(settings: ServiceSettings) -> dict[str, Any]:
    """uvicorn's `ssl_certfile` / `ssl_keyfile` from the settings (none: plain HTTP)."""
    if settings.http_tls_certfile is None:
        return {}
    return {"ssl_certfile": settings.http_tls_certfile, "ssl_keyfile": settings.http_tls_keyfile}


def settings_of(app: FastAPI) -> ServiceSettings | None:
    """The settings a service's app was built from (`Runtime.asgi` keeps them on its state);
    None for another ASGI app (the bench's baseline)."""
    settings = getattr(app.state, "settings", None)
    return settings if isinstance(settings, ServiceSettings) else None


def main(argv: Sequence[str] | None = None) -> None:
    """Build the app from its factory and run it under uvicorn (HTTPS when configured)."""
    parser = argparse.ArgumentParser(prog="python -m shared.plumbing.serve")
    parser.add_argument("factory", help="module:function returning the service's app")
    parser.add_argument("--host", help="default: the service's <P>HTTP_HOST")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--log-level", default=None, help="uvicorn's own log level")
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=25)
    args = parser.parse_args(argv)
    app = import_from_string(args.factory)()
    settings = settings_of(app)
    uvicorn.run(
        app,
        host=args.host or (settings.http_host if settings else "127.0.0.1"),
        port=args.port,
        http=HttpToolsProtocol,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
        **(tls_options(settings) if settings else {}),
    )


if __name__ == "__main__":
    main()
