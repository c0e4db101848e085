"""The decision-latency baseline: a trivial endpoint of the same shape, served the same way."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ANSWER = {
    "subject": "usr_0",
    "decisions": [{"purpose": "marketing_email", "allowed": True, "reason": "granted"}],
}


def create() -> FastAPI:
    """`uvicorn --factory bench.trivial_app:create`: one route, a constant answer, no I/O."""
    app = FastAPI()

    @app.get("/v1/subjects/{subject}/decisions")
    async def decisions(subject: str) -> dict[str, Any]:
        return ANSWER

    return app
