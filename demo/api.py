"""The three services' read APIs as the demo uses them (bearer token; download links without)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import httpx

from demo.config import DemoConfig


class Api:
    """The three services' read APIs (bearer token), as the demo uses them."""

    def __init__(self, config: DemoConfig) -> None:
        auth = {"Authorization": f"Bearer {config.token}"}
        self.export_url = config.export_url
        self.consent = httpx.AsyncClient(base_url=config.consent_url, headers=auth, timeout=10)
        self.retention = httpx.AsyncClient(base_url=config.retention_url, headers=auth, timeout=10)
        self.export = httpx.AsyncClient(base_url=config.export_url, headers=auth, timeout=10)
        self.public = httpx.AsyncClient(timeout=30)  # download links carry their own signature

    async def close(self) -> None:
        for client in (self.consent, self.retention, self.export, self.public):
            await client.aclose()

    async def ready(self) -> list[str]:
        """Names of the services whose /readyz does not answer 200."""
        down = []
        for name, client in (
            ("consent", self.consent),
            ("retention", self.retention),
            ("export", self.export),
        ):
            try:
                response = await client.get("/readyz")
            except httpx.HTTPError:
                down.append(f"{name} ({client.base_url} does not answer)")
                continue
            if response.status_code != 200:
                down.append(f"{name} (readyz {response.status_code})")
        return down

    @staticmethod
    async def _json(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
        response = await client.get(path, params=params)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    async def decision(self, subject: str, purpose: str) -> dict[str, Any]:
        path = f"/v1/subjects/{subject}/decisions"
        body: dict[str, Any] = await self._json(self.consent, path, purpose=purpose)
        return body

    async def consent_state(self, subject: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._json(self.consent, f"/v1/subjects/{subject}/consent")
        return body

    async def ledger_check(self, subject: str) -> dict[str, Any]:
        path = f"/v1/subjects/{subject}/consent/history/verify"
        body: dict[str, Any] = await self._json(self.consent, path)
        return body

    async def retention_view(self, subject: str) -> dict[str, Any]:
        path = f"/v1/subjects/{subject}/retention"
        body: dict[str, Any] = await self._json(self.retention, path)
        return body

    async def request(self, request_id: str) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self._json(self.retention, f"/v1/requests/{request_id}")
        return body

    async def holds(self) -> list[dict[str, Any]]:
        body = await self._json(self.retention, "/v1/holds")
        return list(body["holds"])

    async def export_view(self, request_id: str) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self._json(self.export, f"/v1/exports/{request_id}")
        return body

    async def download(self, url: str) -> httpx.Response:
        return await self.public.get(urljoin(self.export_url + "/", url))
