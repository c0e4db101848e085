"""HTTP: export status for the portal (bearer token) and the signed download (its own auth)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from services.export import links, store
from services.export.context import Context
from services.export.domain import link_expiry, status_data
from services.export.storage import Storage, bundle_key
from shared.contract.events import CategoryOutcome, RequestStatus
from shared.plumbing.keyring import Keyring, keyring
from shared.plumbing.service import Api

CHUNK = 256 * 1024


class ExportView(BaseModel):
    """Where an export request stands; `download_url` only while the bundle can be fetched."""

    request_id: str
    subject: str
    status: RequestStatus
    overdue: bool
    deadline: datetime
    missing_owners: list[str]
    outcomes: list[CategoryOutcome]
    bundle_id: str | None = None
    bundle_expires_at: datetime | None = None
    download_url: str | None = None
    download_expires_at: datetime | None = None


def make_api(ctx: Context) -> Api:
    """The export status behind the bearer token, and the download its signed link authorises."""
    return Api(_status_routes(ctx), public=_download_routes(ctx))


def _status_routes(ctx: Context) -> APIRouter:
    router = APIRouter(tags=["export"])

    @router.get(
        "/v1/exports/{request_id}",
        response_model=ExportView,
        responses={404: {"description": "No export request with this id."}},
    )
    async def export_status(request_id: str) -> ExportView:
        """Where an export request stands, with a fresh signed download link while it can."""
        async with ctx.pool.acquire() as conn:
            row = await store.get_request(conn, request_id)
        if row is None:
            raise HTTPException(404, detail=f"no export request {request_id!r}")
        now = ctx.now()
        data = status_data(row.request, now)
        view = ExportView(subject=row.request.subject, **data.model_dump(include=_VIEW_FIELDS))
        expires_at = row.request.bundle_expires_at
        if (
            row.request.bundle_id
            and expires_at
            and row.bundle_deleted_at is None
            and now < expires_at
        ):
            link_expires = link_expiry(now, ctx.settings.link_ttl.total_seconds(), expires_at)
            path = links.download_path(
                _secret(ctx), request_id, row.request.bundle_id, int(link_expires.timestamp())
            )
            view.download_url = ctx.settings.public_base_url.rstrip("/") + path
            view.download_expires_at = link_expires
        return view

    return router


_VIEW_FIELDS = {
    "request_id", "status", "overdue", "deadline", "missing_owners", "outcomes", "bundle_id",
    "bundle_expires_at",
}  # fmt: skip


DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "The bundle, streamed."},
    403: {"description": "Invalid download link (bad signature or bundle)."},
    410: {"description": "The link expired, or the bundle expired and was deleted."},
}


def _download_routes(ctx: Context) -> APIRouter:
    """The download: authorised by the link's signature and expiry alone (no bearer token)."""
    router = APIRouter(tags=["export"])

    @router.get(
        "/v1/downloads/{bundle_id}",
        response_class=StreamingResponse,
        responses=DOWNLOAD_RESPONSES,
    )
    async def download(
        bundle_id: str,
        expires: int = Query(..., description="Unix time the link expires (signed)."),
        sig: str = Query(..., max_length=128, description="The link's signature."),
        kid: str | None = Query(
            None, max_length=32, description="The id of the key that signed the link."
        ),
    ) -> StreamingResponse:
        """The export bundle (a ZIP file); the signed link from the status is the authority."""
        async with ctx.pool.acquire() as conn:
            row = await store.get_by_bundle(conn, bundle_id)
        request_id = row.request.request_id if row else ""
        if row is None or not links.valid(_secret(ctx), request_id, bundle_id, expires, sig, kid):
            raise HTTPException(403, detail="invalid download link (bad signature or bundle)")
        now = ctx.now()
        if now >= datetime.fromtimestamp(expires, UTC):
            raise HTTPException(410, detail="download link expired; ask for a new one")
        bundle_expires = row.request.bundle_expires_at
        gone = row.bundle_deleted_at is not None or (
            bundle_expires is not None and now >= bundle_expires
        )
        if gone or (row.data_key is None and row.sealed_at_rest):  # its key destroyed with it
            raise HTTPException(410, detail="the bundle has expired and was deleted")
        storage = ctx.storage_for(row)  # decrypted while served
        if not storage.exists(bundle_key(bundle_id)):
            raise HTTPException(410, detail="the bundle has expired and was deleted")
        return StreamingResponse(
            _chunks(storage, bundle_key(bundle_id)),
            media_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="export-{bundle_id}.zip"',
                "Cache-Control": "no-store",
            },
        )

    return router


def _secret(ctx: Context) -> Keyring:
    return keyring(ctx.settings.link_secret)


def _chunks(storage: Storage, key: str) -> Iterator[bytes]:
    with storage.reader(key) as stream:
        while chunk := stream.read(CHUNK):
            yield chunk
