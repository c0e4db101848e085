"""What the export service's handlers, loops and API share: one `Context`, built at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from services.export import domain, parts
from services.export.at_rest import SealedStorage
from services.export.domain import Request
from services.export.settings import ExportSettings
from services.export.storage import FolderStorage, Storage
from services.export.store import RequestRow
from shared.catalogue import load_purposes, load_retention
from shared.contract.codec import new_event
from shared.contract.events import RequestStatusChanged
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.context import ServiceContext
from shared.plumbing.outbox import Outbox
from shared.recipients import load_recipients

SOURCE = "privacy-plane.export"


@dataclass(kw_only=True)
class Context(ServiceContext):
    """Settings, clock, pool, the key vault and the bundle storage."""

    settings: ExportSettings
    vault: parts.KeyVault
    storage: Storage
    information: dict[str, domain.CategoryInfo]
    """What the access file says of each category: purposes, legal basis, retention."""

    @classmethod
    def from_settings(cls, settings: ExportSettings, clock: Clock | None = None) -> Context:
        """The context for `settings`: their service key and storage folder."""
        return cls(
            settings=settings,
            clock=clock or SystemClock(),
            vault=parts.KeyVault(settings.service_keys()),
            storage=FolderStorage(settings.storage_dir),
            information=_information(settings),
        )

    def storage_for(self, row: RequestRow) -> Storage:
        """The request's parts and bundle: encrypted under its data key (KeyDestroyed once
        that is gone; plain files only for a request from before migration 0006)."""
        if not row.sealed_at_rest:
            return self.storage
        if row.data_key is None:
            raise KeyDestroyed(f"the data key of request {row.request.request_id} is destroyed")
        return SealedStorage(self.storage, self.vault.open(row.data_key))

    def publish_status(self, out: Outbox, request: Request, reason: str | None = None) -> None:
        """request.status.v1 for the request as it stands."""
        now = self.now()
        event = new_event(
            RequestStatusChanged,
            subject=request.subject,
            source=SOURCE,
            data=domain.status_data(request, now, reason),
            time=now,
        )
        out.publish(self.settings.topics.requests_status, event)


class KeyDestroyed(Exception):
    """The request's files can no longer be read: its data key was destroyed."""


def _information(settings: ExportSettings) -> dict[str, domain.CategoryInfo]:
    """The access file's information, from the catalogue, the retention rules and the register
    (each validated here, at start-up, against the others)."""
    purposes = load_purposes()
    rules = load_retention(purposes=purposes)
    register = load_recipients(purposes=purposes, rules=rules)
    return domain.information(settings.owners, rules, purposes, register)
