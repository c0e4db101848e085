"""deploy/local/run's start, run for real up to the services: it asks deploy/local/up for the
infrastructure, creates the contract topics with the shared topics CLI and makes the API token.

The script runs from a copy of deploy/local beside links to this checkout's `shared` and
virtualenv, with a stand-in `up` that records its call and points at the test's Kafka and
PostgreSQL (the real one would start or touch the machine's shared ones). The copy has no
`services/`, so the script then stops with "no service to start": starting the three services
is what `make run` shows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.contract.topics import Topics
from tests.support.infra import ROOT, Infra

pytestmark = pytest.mark.integration

STAND_IN_UP = """#!/usr/bin/env bash
set -euo pipefail
mkdir -p "$PP_LOCAL_DIR"
echo "up $*" >>"$PP_LOCAL_DIR/calls"
printf 'KAFKA_BOOTSTRAP_SERVERS=%s\\nDATABASE_URL=%s\\n' "$PP_TEST_KAFKA" "$PP_TEST_DATABASE" \\
  >"$PP_LOCAL_DIR/env"
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A repository root with a copy of deploy/local (a stand-in `up`), `shared` and `.venv`."""
    repo = tmp_path / "repo"
    local = repo / "deploy" / "local"
    local.mkdir(parents=True)
    for name in ("run", "lib.sh"):
        shutil.copy2(ROOT / "deploy" / "local" / name, local / name)
    (local / "up").write_text(STAND_IN_UP)
    (local / "up").chmod(0o755)
    (repo / "shared").symlink_to(ROOT / "shared")
    (repo / ".venv").symlink_to(Path(sys.executable).parents[1])
    return repo


async def test_start_asks_up_creates_the_topics_and_the_token_then_needs_a_service(
    infra: Infra, checkout: Path, tmp_path: Path
) -> None:
    topics = Topics().with_prefix(f"lr{uuid.uuid4().hex[:8]}.")
    state = tmp_path / "state"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PP_LOCAL_DIR": str(state),
        "PP_TEST_KAFKA": infra.kafka,
        "PP_TEST_DATABASE": infra.database_url,
        **{f"TOPICS__{field.upper()}": name for field, name in topics.model_dump().items()},
    }
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [str(checkout / "deploy" / "local" / "run"), "--detach"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
        finally:
            await admin.close()
    finally:
        await _delete(infra, topics)
    assert (state / "calls").read_text() == "up \n"  # once, for both Kafka and PostgreSQL
    assert f"Kafka {infra.kafka} and PostgreSQL are up" in result.stdout  # from up's env file
    assert set(topics.all()) <= existing
    for name in topics.all():
        assert f"topics: {name} created" in result.stdout
    token = state / "api-token"
    assert len(token.read_text()) == 64
    assert token.stat().st_mode & 0o077 == 0  # the bearer token is the user's alone
    assert result.returncode != 0  # the copy has no services/
    assert "no service to start" in result.stderr


async def _delete(infra: Infra, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        present = set(await admin.list_topics()) & set(topics.all())
        if present:
            await admin.delete_topics(sorted(present))
    finally:
        await admin.close()
