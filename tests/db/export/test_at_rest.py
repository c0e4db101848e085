"""Erasure reaches the export service's files (issue 21 item 4): parts are encrypted at rest
under a per-request data key that an erasure destroys, and exchange files are deleted by
default once taken in and when their request was erased."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import pytest

from services.export.at_rest import NotReadable, SealedStorage
from services.export.loops import delete_exchange_files
from services.export.storage import FolderStorage
from shared.plumbing.loops import Items
from tests.db.export.test_apply import Fed, erasure, fed, requested
from tests.integration.export.harness import SERVICE_KEY, inline_parts, reference_part
from tests.support.export_files import read_stored

pytestmark = pytest.mark.db
__all__ = ["fed"]  # the fixture, imported for pytest

SECRET = "crm-note-7f3a-only-in-this-test"


def crm_records() -> list[dict[str, Any]]:
    return [{"id": "c1", "note": SECRET}]


async def test_a_stored_part_is_ciphertext_and_an_erasure_destroys_its_key(
    fed: Fed, tmp_path: Path
):
    storage = tmp_path / "storage"
    await fed.feed(requested(fed.clock))
    crm = (await fed.jobs())["crm"]
    await fed.feed(*inline_parts(crm, "crm_data", crm_records()))
    [part] = storage.glob("parts/*/crm/crm_data/*.jsonl")
    assert SECRET.encode() not in part.read_bytes()
    data_key = await fed.pool.fetchval("SELECT data_key FROM requests")
    key = part.relative_to(storage).as_posix()
    assert SECRET.encode() in read_stored(SERVICE_KEY, storage, data_key, key)  # the service can
    leftover = tmp_path / "leftover.jsonl"  # a copy the erasure cannot reach (a backup, say)
    shutil.copy(part, leftover)

    await fed.feed(erasure("usr_1"))

    assert await fed.pool.fetchval("SELECT data_key FROM requests") is None
    assert not part.exists()
    # with the key gone, the copy is noise: no other key opens it, and none is kept
    other = SealedStorage(FolderStorage(tmp_path), bytes(32))
    with pytest.raises(NotReadable), other.reader("leftover.jsonl") as stream:
        stream.read()
    assert SECRET.encode() not in leftover.read_bytes()


async def test_by_default_exchange_files_go_once_taken_and_when_their_request_was_erased(
    fed: Fed, tmp_path: Path
):
    exchange = tmp_path / "exchange"
    await fed.feed(requested(fed.clock))
    jobs = await fed.jobs()
    taken = reference_part(jobs["crm"], "crm_data", crm_records(), exchange)
    await fed.feed(taken)
    await fed.feed(erasure("usr_1"))  # cancels the open request
    late = reference_part(jobs["support"], "support_communications", crm_records(), exchange)
    await fed.feed(late)  # an owner answering the erased request afterwards

    files = [Path(urlsplit(e.data.location or "").path).resolve() for e in (taken, late)]
    queued = {r["path"] for r in await fed.pool.fetch("SELECT path FROM exchange_deletions")}
    assert queued == {str(f) for f in files}
    ctx = cast(Any, SimpleNamespace(pool=fed.pool))
    assert await delete_exchange_files(ctx, Items("test", "cleaner"))
    assert not any(f.exists() for f in files)
    assert list(exchange.iterdir()) == []
