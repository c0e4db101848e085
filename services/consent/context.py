"""What the consent service's handlers, loops and API share: one `Context`, built at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.consent import fastpath, ledger
from services.consent.pseudonyms import Pseudonym, candidates
from services.consent.settings import ConsentSettings
from services.consent.state import SubjectState
from shared.catalogue import PurposeCatalogue, load_purposes
from shared.contract.codec import encode_envelope, event_time, kafka_headers
from shared.evidence.signing import Signer
from shared.plumbing import tracing
from shared.plumbing.clock import Clock, SystemClock
from shared.plumbing.context import ServiceContext
from shared.plumbing.keyring import keyring
from shared.plumbing.outbox import OutboxRow

SOURCE = "privacy-plane.consent"
STATE_TYPE = "consent.state.v1"
STATE_HEADERS = kafka_headers()
"""Shared by every state row (never changed): the outbox packs one dict's JSON once per batch."""


def load_catalogue(settings: ConsentSettings) -> PurposeCatalogue:
    """The purpose catalogue: the configured file, or the shared one."""
    return load_purposes(settings.purposes_file) if settings.purposes_file else load_purposes()


@dataclass(kw_only=True)
class Context(ServiceContext):
    """Settings, clock, pools, the purpose catalogue and the ledger key."""

    settings: ConsentSettings
    catalogue: PurposeCatalogue
    """The catalogue in force now: the file's, with published policies in effect applied."""
    base_catalogue: PurposeCatalogue | None = None
    """The file's catalogue (set from `catalogue` when not given)."""
    keys: tuple[tuple[str, bytes], ...] = field(init=False)
    """The pseudonym keyring as (kid, key), the current key first (every one is looked up)."""
    key: bytes = field(init=False)
    """The current pseudonym key (new people are named with it)."""
    kid: str = field(init=False)
    """The current pseudonym key's id (recorded on the rows it names)."""
    signer: Signer | None = field(init=False)
    """The checkpoint signing key (None: checkpoints are off)."""
    reads: asyncpg.Pool | None = field(default=None, init=False)
    """Connections for the decision endpoint: single read-only statements, no reset on release."""
    _last_time: tuple[datetime | None, str] = field(init=False, default=(None, ""))

    def __post_init__(self) -> None:
        self.keys = tuple((k.kid, k.encoded()) for k in keyring(self.settings.ledger_key))
        self.kid, self.key = self.keys[0]
        self.signer = self.settings.checkpoint_signer()
        if self.base_catalogue is None:
            self.base_catalogue = self.catalogue

    @classmethod
    def from_settings(cls, settings: ConsentSettings, clock: Clock | None = None) -> Context:
        """The context for `settings`, with the catalogue they name."""
        catalogue = load_catalogue(settings)
        return cls(settings=settings, catalogue=catalogue, clock=clock or SystemClock())

    def read_pool(self) -> asyncpg.Pool:
        """The decision endpoint's pool, or the service's own until that is open."""
        return self.reads or self.pool

    async def open(self, pool: asyncpg.Pool) -> None:
        await super().open(pool)
        settings = self.settings
        self.reads = await asyncpg.create_pool(
            settings.database_dsn(),
            min_size=1,
            max_size=settings.read_pool_size,
            server_settings={"search_path": settings.db_schema, "timezone": "UTC"},
            reset=_no_reset,
            command_timeout=10,
        )

    async def close(self) -> None:
        reads, self.reads = self.reads, None
        if reads is not None:
            await reads.close()
        await super().close()

    def principal(self, subject: str) -> str:
        """How the current key names `subject` (a new person's ledger goes under it)."""
        return ledger.pseudonym(self.key, subject)

    @property
    def rotating(self) -> bool:
        """Whether more than one pseudonym key is listed (look-ups then try each)."""
        return len(self.keys) > 1

    def pseudonyms(self, subject: str) -> list[Pseudonym]:
        """`subject` under every listed key, the current key's first."""
        return candidates(self.keys, subject)

    def _event_time(self, now: datetime) -> str:
        """`now` as a CloudEvents time; a batch formats its one `now` once."""
        if self._last_time[0] != now:
            self._last_time = (now, event_time(now))
        return self._last_time[1]

    def state_row(
        self, state: SubjectState, now: datetime, at: datetime | None = None
    ) -> OutboxRow:
        """`consent.state.v1` for a state, encoded straight to JSON (the ingest hot path).

        Its id is fixed by subject and version, and its time is `at` (the causing event's,
        else `now`), so a replay or a restore re-emits the same event, byte for byte.
        """
        event_id = f"consent-state:{state.subject}:{state.version}"
        value = encode_envelope(
            event_id=event_id,
            source=SOURCE,
            event_type=STATE_TYPE,
            subject=state.subject,
            time=event_time(at) if at is not None else self._event_time(now),
            data=fastpath.state_json(state, self.catalogue, now),
            extensions=tracing.outgoing(),  # the causing event's trace, carried on
        )
        return OutboxRow(
            self.settings.topics.consent_state,
            state.subject.encode(),
            value,
            STATE_HEADERS,
            event_id,
        )


async def _no_reset(_: asyncpg.Connection) -> None:
    """Nothing to reset: these connections never change session state."""
