"""An erasure that trims a request while a bundle is being assembled (policy 5.1 with 5.3): the
assembler at work read the erased parts, so its finish is refused and the next attempt leaves
the erased category out."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile

import pytest

from services.export.loops import assemble_one
from services.export.settings import ExportSettings
from services.export.storage import bundle_key
from tests.db.export.test_apply import Fed
from tests.db.export.test_assembly_fencing import (
    SlowStorage,
    _assembler,
    _one_part_in,
    fed_settings,
)
from tests.support import events as make
from tests.support.export_files import read_stored

pytestmark = pytest.mark.db
__all__ = ["fed_settings"]  # the fixture, imported for pytest


async def test_an_erasure_during_assembly_sends_the_request_back_and_the_bundle_leaves_it_out(
    fed_settings: tuple[Fed, ExportSettings],
):
    fed, settings = fed_settings
    await _one_part_in(fed)  # crm_data in, request ready
    async with _assembler(settings, fed) as slow, _assembler(settings, fed) as quick:
        held = SlowStorage(settings.storage_dir)
        slow.storage = held
        first = asyncio.create_task(assemble_one(slow, slow.information))
        assert await asyncio.to_thread(held.written.wait, 30)  # its bundle holds crm_data
        erasure = make.erasure(
            "usr_1", "era_crm", scope=["crm_data"], verified_by="portal", source="portal"
        )
        await fed.feed(erasure)
        assert await fed.pool.fetchval("SELECT status FROM requests") == "ready"
        held.release.set()
        assert await first  # refused: the request went back to ready under it
        assert await fed.pool.fetchval("SELECT bundle_id FROM requests") is None
        assert await assemble_one(quick, quick.information)

    row = await fed.pool.fetchrow("SELECT bundle_id, data_key FROM requests")
    assert row is not None
    bundle_id, data_key = row["bundle_id"], row["data_key"]
    # encrypted at rest under the request's data key (services/export/at_rest.py)
    content = read_stored(
        settings.service_key_bytes(), settings.storage_dir, data_key, bundle_key(bundle_id)
    )
    archive = zipfile.ZipFile(io.BytesIO(content))
    manifest = json.loads(archive.read("manifest.json"))
    assert [e["category"] for e in manifest["erased"]] == ["crm_data"]
    assert "data/crm/crm_data.json" not in archive.namelist()
    assert sorted(p.name for p in (settings.storage_dir / "bundles").iterdir()) == [
        f"{bundle_id}.zip"
    ]
