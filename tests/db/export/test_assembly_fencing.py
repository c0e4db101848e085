"""Two export assemblers never write one bundle: a lease that lapses under a slow one fences it.

Each claim takes the next attempt number and writes the bundle under a key of that attempt;
only the attempt that still holds the claim may finish, and the loser removes its own file.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from services.export import domain, store
from services.export.context import Context
from services.export.loops import assemble_one
from services.export.settings import ExportSettings
from services.export.storage import FolderStorage, bundle_key
from shared.contract.events import ExportJob, ExportPart
from tests.db.export.test_apply import Fed, _fed, requested
from tests.integration.export.harness import inline_parts, records_for, settings_for

pytestmark = pytest.mark.db


class SlowStorage:
    """Folder storage whose bundle writes wait, once written, until released: a slow assembler
    whose lease lapses while its zip is still being written."""

    def __init__(self, root: Path) -> None:
        self.inner = FolderStorage(root)
        self.written = threading.Event()
        self.release = threading.Event()

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        with self.inner.writer(key) as out:
            yield out
            if key.startswith("bundles/"):
                self.written.set()
                self.release.wait(30)

    def reader(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self.inner.reader(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def delete_prefix(self, prefix: str) -> None:
        self.inner.delete_prefix(prefix)


@contextlib.asynccontextmanager
async def _assembler(settings: ExportSettings, fed: Fed) -> AsyncIterator[Context]:
    ctx = Context.from_settings(settings, fed.clock)
    await ctx.open(fed.pool)
    try:
        yield ctx
    finally:
        await ctx.close()


async def _one_part_in(fed: Fed) -> ExportJob:
    await fed.feed(requested(fed.clock))
    crm = (await fed.jobs())["crm"]
    parts_in: list[ExportPart] = inline_parts(crm, "crm_data", records_for("crm", "crm_data", 2))
    await fed.feed(*parts_in)
    await fed.pool.execute("UPDATE requests SET status = 'ready'")
    return crm


async def test_an_assembler_whose_lease_lapsed_cannot_finish_over_the_one_that_took_over(
    fed_settings: tuple[Fed, ExportSettings], tmp_path: Path
):
    fed, settings = fed_settings
    await _one_part_in(fed)
    bundles = tmp_path / "storage" / "bundles"
    async with _assembler(settings, fed) as slow, _assembler(settings, fed) as quick:
        held = SlowStorage(settings.storage_dir)
        slow.storage = held
        first = asyncio.create_task(assemble_one(slow, slow.information))
        assert await asyncio.to_thread(held.written.wait, 30)
        fed.clock.advance(settings.assembly_lease + timedelta(seconds=1))
        assert await assemble_one(quick, quick.information)  # takes the lapsed lease over
        held.release.set()
        assert await first  # its finish is refused: the request is no longer its to finish

    [row] = await fed.pool.fetch("SELECT status, bundle_id, storage_key FROM requests")
    assert row["status"] == "partially_completed"
    # the bundle the request names is there, and it is the only file: the loser removed its own
    assert sorted(p.name for p in bundles.iterdir()) == [f"{row['bundle_id']}.zip"]
    assert row["bundle_id"] == domain.bundle_id_for(row["storage_key"], 2)
    finished = [s for s in await fed.statuses() if s.data.status.value == "partially_completed"]
    assert [s.data.bundle_id for s in finished] == [row["bundle_id"]]


async def test_the_attempt_that_finishes_deletes_what_a_crashed_attempt_left(
    fed_settings: tuple[Fed, ExportSettings],
):
    fed, settings = fed_settings
    await _one_part_in(fed)
    async with fed.pool.acquire() as conn, conn.transaction():
        claim = await store.claim_due(conn, fed.clock.now(), fed.clock.now())
    assert claim is not None
    assert claim.attempt == 1
    storage = FolderStorage(settings.storage_dir)
    crashed = bundle_key(domain.bundle_id_for(claim.row.storage_key, 1))
    with storage.writer(crashed) as out:  # written, then the process died before finishing
        out.write(b"PK personal data")
    fed.clock.advance(timedelta(seconds=1))
    async with _assembler(settings, fed) as ctx:
        assert await assemble_one(ctx, ctx.information)
    assert not storage.exists(crashed)
    bundle_id = await fed.pool.fetchval("SELECT bundle_id FROM requests")
    assert bundle_id == domain.bundle_id_for(claim.row.storage_key, 2)
    assert storage.exists(bundle_key(bundle_id))


@pytest.fixture
async def fed_settings(
    infra: Any, topics: Any, schema: str, tmp_path: Path
) -> AsyncIterator[tuple[Fed, ExportSettings]]:
    settings = settings_for(infra, topics, schema, tmp_path)
    async with _fed(settings) as fed:
        yield fed, settings
