"""The other teams' side of the interop tests: the official CloudEvents SDKs, and our services.

The Python SDK 1.x is the project's own dependency. SDK 2.x has the same distribution name, so
it lives in a small virtualenv of its own; the Java SDK's jars come from Maven Central and a
javac build of java/Interop.java. Both are cached under .local/interop/ (keyed by what they are
made from), so only a first run pays for them. Consent, retention and export run in-process on
private topics and schemas, shared by the module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.consent.app import build_runtime as consent_runtime
from services.consent.handlers import HANDLERS as CONSENT
from services.consent.settings import ConsentSettings
from services.export.app import build_runtime as export_runtime
from services.export.handlers import HANDLERS as EXPORT
from services.retention.app import build_runtime as retention_runtime
from services.retention.handlers import HANDLERS as RETENTION
from shared.contract.topics import Topics
from shared.plumbing.clock import ManualClock
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from shared.plumbing.service import Runtime
from tests.integration.export.harness import settings_for as export_settings
from tests.integration.retention.harness import settings as retention_settings
from tests.support.infra import ROOT, Infra

HERE = Path(__file__).parent
CACHE = Path(os.environ.get("PP_LOCAL_DIR", ROOT / ".local")) / "interop"
SDK2 = "cloudevents==2.2.0"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
TOKEN = "interop-t0ken-for-tests"


def missing_tool(tool: str) -> None:
    """CI installs every tool (.ci/run): there a missing one fails; elsewhere it skips."""
    message = f"{tool} is not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, env=env, **kwargs
    )
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


@pytest.fixture(scope="session")
def sdk2() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Run sdk2_driver.py in the SDK 2.x virtualenv: a request in, a report out (JSON)."""
    venv = CACHE / f"cloudevents2-{_digest(SDK2.encode(), sys.version.encode())}"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", "--without-pip", venv])
        # This environment's pip installs into the new one: no ensurepip, quicker.
        _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", SDK2])
        (venv / ".ready").touch()

    def call(request: dict[str, Any]) -> dict[str, Any]:
        driver = HERE / "sdk2_driver.py"
        done = _run([python, "-I", driver], input=json.dumps(request), cwd=HERE)
        return dict(json.loads(done.stdout))

    return call


@pytest.fixture(scope="session")
def java() -> Callable[..., list[dict[str, Any]]]:
    """Run java/Interop.java (built once) with the Java SDK: arguments and JSON lines in,
    JSON lines out."""
    for tool in ("javac", "mvn"):
        if shutil.which(tool) is None:
            missing_tool(tool)
    pom, source = HERE / "java" / "pom.xml", HERE / "java" / "Interop.java"
    libs = CACHE / f"java-libs-{_digest(pom.read_bytes())}"
    if not (libs / ".ready").exists():
        shutil.rmtree(libs, ignore_errors=True)
        copy: list[str | Path] = ["mvn", "-q", "-B", "-f", pom, "dependency:copy-dependencies"]
        _run([*copy, f"-DoutputDirectory={libs}", "-DincludeScope=runtime"])
        (libs / ".ready").touch()
    classes = CACHE / f"java-classes-{_digest(pom.read_bytes(), source.read_bytes())}"
    if not (classes / "Interop.class").exists():
        _run(["javac", "-d", classes, "-cp", f"{libs}/*", source])
    classpath = f"{classes}:{libs}/*"

    def call(*args: str, lines: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:  # type: ignore[assignment]
        given = "".join(json.dumps(line) + "\n" for line in lines)
        done = _run(["java", "-cp", classpath, "Interop", *args], input=given)
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    return call


@dataclass
class Stack:
    """Consent, retention and export running on one set of private topics."""

    infra: Infra
    topics: Topics
    runtimes: dict[str, Runtime[Any]]
    schemas: dict[str, str]
    accepts: dict[str, frozenset[str]]
    clock: ManualClock
    db: asyncpg.Connection

    async def count(self, service: str, sql: str, *args: Any) -> int:
        """A count in `service`'s schema ({s} stands for it)."""
        return int(await self.db.fetchval(sql.replace("{s}", f'"{self.schemas[service]}"'), *args))


@pytest.fixture(scope="module")
async def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:10]
    topics = Topics().with_prefix(f"t{run}.")
    await ensure_topics(infra.kafka, topics, TopicPolicy(partitions=3))
    schemas = {name: f"t_{run}_{name}" for name in ("consent", "retention", "export")}
    clock = ManualClock(T0)
    consent = ConsentSettings(
        kafka_bootstrap_servers=infra.kafka,
        database_url=infra.database_url,
        db_schema=schemas["consent"],
        group_id=f"g-{schemas['consent']}",
        topics=topics,
        api_token=TOKEN,
        ledger_key="ledger-test-key-interop",
        batch_timeout_ms=20,
    )
    root = tmp_path_factory.mktemp("interop-export")
    runtimes: dict[str, Runtime[Any]] = {
        "consent": consent_runtime(consent, clock),
        "retention": retention_runtime(
            retention_settings(infra, topics, schemas["retention"]), clock
        ),
        "export": export_runtime(export_settings(infra, topics, schemas["export"], root), clock),
    }
    for runtime in runtimes.values():
        await runtime.start()
    db = await asyncpg.connect(infra.database_url)
    accepts = {
        "consent": frozenset(CONSENT.accepts),
        "retention": frozenset(RETENTION.accepts),
        "export": frozenset(EXPORT.accepts),
    }
    try:
        yield Stack(infra, topics, runtimes, schemas, accepts, clock, db)
    finally:
        for runtime in runtimes.values():
            await runtime.stop()
        for schema in (*schemas.values(), f"t_{run}_outbox"):
            await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await db.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
        await admin.start()
        try:
            await admin.delete_topics(topics.all())
        finally:
            await admin.close()


def b64(raw: bytes | None) -> str | None:
    """Bytes through JSON (to and from the SDK 2.x driver)."""
    return None if raw is None else base64.b64encode(raw).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)
