"""A restore from backup (`privacy-plane backup` / `restore`) is recorded by the next
checkpoint as a signed fork: the ledger re-derived after it verifies, the checkpoints of the
abandoned history are shown as superseded, and the fork names the restore."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.consent.checkpoints import LEDGER
from shared.cli import app
from shared.cli.backup import restore_backup, take_backup
from shared.evidence import anchor
from shared.evidence.loop import checkpoint_now
from tests.db.evidence.conftest import published
from tests.db.evidence.test_ledger_tamper import SRC, T0, open_consent
from tests.support import events as make
from tests.support.infra import Infra

pytestmark = pytest.mark.db


async def test_a_restore_is_a_signed_fork_and_the_rederived_ledger_verifies(
    infra: Infra,
    schema: str,
    key_file: Path,
    public_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PP_DATABASE_URL", infra.database_url)
    at = [T0 + timedelta(minutes=i) for i in range(6)]
    before = [
        make.granted("usr_a", source=SRC, at=at[0]),
        make.granted("usr_b", source=SRC, at=at[1]),
    ]
    after = [
        make.withdrawn("usr_a", source=SRC, at=at[2]),
        make.granted("usr_c", source=SRC, at=at[3]),
    ]
    async with open_consent(infra.database_url, schema, key_file) as consent:
        topic = consent.ctx.settings.topics.privacy_audit
        await consent.process(*before)
        assert await checkpoint_now(consent.ctx, LEDGER) is not None
        backup = await take_backup(infra.database_url, tmp_path / "backup", [schema])
        await consent.process(*after)
        lost = await checkpoint_now(consent.ctx, LEDGER)
        assert lost is not None
        out = await published(consent.pool, topic)
    await restore_backup(infra.database_url, backup, [schema])
    async with open_consent(infra.database_url, schema, key_file) as consent:
        consent.offset = len(before)  # the restored positions: what came after is replayed
        await consent.process(*after, make.granted("usr_d", source=SRC, at=at[4]))
        fork = await checkpoint_now(consent.ctx, LEDGER)
        assert fork is not None
        assert fork.checkpoint.fork is not None
        assert fork.checkpoint.prev_hash == out[0].hash  # descends from the restored head
        out += await published(consent.pool, topic)
    export = tmp_path / "cps.jsonl"
    anchor.write_export(export, out)
    argv = ["verify-ledger", "--schema", schema, "--public-key", public_key]
    result = await asyncio.to_thread(CliRunner().invoke, app, [*argv, "--checkpoints", str(export)])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "fork: checkpoint 2 records a restore" in text
    assert f"superseded by a restore: checkpoints {lost.checkpoint.number}" in text
    assert "5 entries, 5 under signed checkpoints, 0 newer" in text
