"""TLS everywhere, on real processes: `deploy/local/up --tls` starts Kafka (SASL_SSL with
SCRAM-SHA-512) and PostgreSQL (ssl=on, TLS-only pg_hba) on private ports; consent and
retention serve HTTPS as OS processes; the CLI and the consent clients use the same env file.
A wrong CA or SASL password is refused quickly, with one line naming the setting."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from services.consent.app import build_runtime
from services.consent.settings import ConsentSettings
from shared.cli import app as cli
from shared.consent_client import ConsentClient, DecisionsClient
from shared.contract.topics import Topics
from shared.plumbing.kafka import TopicPolicy, ensure_topics
from shared.plumbing.settings import KafkaSecurity
from shared.plumbing.tls import TransportRefused
from tests.support.ports import free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tls-test-token-0123456"
LEDGER_KEY = "tls-test-ledger-key-0123"
SUBJECT = "usr_tls_1"
WAIT_S = 30.0  # every wait is bounded: a refusal must not hang


def _read_env(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, _, value in pairs}


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    """The TLS stack of `deploy/local/up --tls` in a folder and on ports of its own."""
    state = Path(tempfile.mkdtemp(prefix="pp-tls-"))
    state.chmod(0o755)  # PostgreSQL runs as `postgres` when we are root
    kafka, controller, pg = free_ports(3)
    env = {
        **os.environ,
        "PP_LOCAL_DIR": str(state),
        "PP_KAFKA_PORT": str(kafka),
        "PP_KAFKA_CONTROLLER_PORT": str(controller),
        "PP_PG_PORT": str(pg),
        "PP_KAFKA_HEAP": "256m",
    }
    up = subprocess.run(
        [ROOT / "deploy/local/up", "--tls"], env=env, capture_output=True, text=True, timeout=240
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        values = _read_env(state / "tls/env")
        other = state / "other-ca.pem"  # a CA that signed nothing of this stack
        key = str(state / "other-ca.key")
        openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        subject = ["-subj", "/CN=not our CA", "-keyout", key, "-out", str(other)]
        subprocess.run([*openssl, *subject], check=True, capture_output=True)
        values["OTHER_CA"] = str(other)
        values["STATE"] = str(state)
        yield values
    finally:
        subprocess.run(
            [ROOT / "deploy/local/down", "--tls", "--purge"], env=env, capture_output=True
        )
        shutil.rmtree(state, ignore_errors=True)


def _security(stack: dict[str, str], **override: str) -> KafkaSecurity:
    password = Path(stack["KAFKA__SASL_PASSWORD_FILE"]).read_text().strip()
    values: dict[str, Any] = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": stack["KAFKA__SASL_MECHANISM"],
        "sasl_username": stack["KAFKA__SASL_USERNAME"],
        "sasl_password": password,
        "ssl_cafile": stack["KAFKA__SSL_CAFILE"],
    }
    return KafkaSecurity(**{**values, **override})


def _service_env(stack: dict[str, str], prefix: str, schema: str) -> dict[str, str]:
    """The env file under the service's prefix, as a deployment would set it."""
    own = {f"{prefix}{k}": v for k, v in stack.items() if k not in ("OTHER_CA", "STATE")}
    own.update(
        {
            f"{prefix}DB_SCHEMA": schema,
            f"{prefix}API_TOKEN": TOKEN,
            f"{prefix}BATCH_TIMEOUT_MS": "20",
            f"{prefix}LOG_FORMAT": "json",
        }
    )
    return own


@pytest.fixture(scope="module")
def services(stack: dict[str, str]) -> Iterator[dict[str, str]]:
    """Consent and retention as OS processes serving HTTPS (`python -m shared.plumbing.serve`)."""
    asyncio.run(
        ensure_topics(
            stack["KAFKA_BOOTSTRAP_SERVERS"], Topics(), TopicPolicy(partitions=1), _security(stack)
        )
    )
    consent_port, retention_port = free_ports(2)
    logs = Path(stack["STATE"])
    procs: dict[str, subprocess.Popen[bytes]] = {}
    urls = {}
    serve = [
        sys.executable,
        "-m",
        "shared.plumbing.serve",
        "--host",
        "127.0.0.1",
        "--no-access-log",
    ]
    for name, prefix, port, extra in (
        ("consent", "CONSENT_", consent_port, {"CONSENT_LEDGER_KEY": LEDGER_KEY}),
        ("retention", "RETENTION_", retention_port, {}),
    ):
        env = {**os.environ, **_service_env(stack, prefix, name), **extra}
        with (logs / f"{name}.log").open("wb") as log:
            procs[name] = subprocess.Popen(
                [*serve, f"services.{name}.app:create", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        urls[name] = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        trust = ssl.create_default_context(cafile=stack["HTTP_CAFILE"])
        for name, url in urls.items():
            while True:
                assert procs[name].poll() is None, (logs / f"{name}.log").read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/readyz", verify=trust).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (logs / f"{name}.log").read_text()[-3000:]
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cli_env(monkeypatch: pytest.MonkeyPatch, stack: dict[str, str], **extra: str) -> CliRunner:
    for key, value in stack.items():
        if key not in ("OTHER_CA", "STATE"):
            monkeypatch.setenv(key if key.startswith("KAFKA__") else f"PP_{key}", value)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    return CliRunner()


def _invoke(runner: CliRunner, *args: str) -> tuple[int, str]:
    """Exit code and output on one line (rich wraps long lines at the terminal's width)."""
    result = runner.invoke(cli, list(args))
    return result.exit_code, " ".join(result.output.split())


def _publish_grant(runner: CliRunner, subject: str) -> tuple[int, str]:
    data = json.dumps({"purpose": "marketing_email", "source": "api"})
    return _invoke(
        runner, "publish", "--type", "consent.granted.v1", "--subject", subject, "--data", data
    )


async def _until(check: Callable[[], Awaitable[bool]]) -> bool:
    """Poll `check` until it is true, for at most WAIT_S seconds."""
    async with asyncio.timeout(WAIT_S):
        while True:
            if await check():
                return True
            await asyncio.sleep(0.1)


async def _decision_over_https(url: str, cafile: str) -> bool:
    async with DecisionsClient(url, TOKEN, cafile=cafile, timeout=5) as client:

        async def allowed() -> bool:
            return (await client.decide(SUBJECT, "marketing_email")).allowed

        return await _until(allowed)


async def _followed_over_sasl_ssl(stack: dict[str, str]) -> bool:
    kwargs = _security(stack).client_kwargs()
    client = ConsentClient(stack["KAFKA_BOOTSTRAP_SERVERS"], Topics().consent_state, **kwargs)

    async def allowed() -> bool:
        return client.may_process(SUBJECT, "marketing_email")

    async with asyncio.timeout(WAIT_S):
        await client.start()
    try:
        return await _until(allowed)
    finally:
        await client.stop()


def test_consent_end_to_end_over_sasl_ssl_https_and_verified_postgres(
    stack: dict[str, str], services: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = _cli_env(
        monkeypatch,
        stack,
        PP_CONSENT_URL=services["consent"],
        PP_RETENTION_URL=services["retention"],
        PP_API_TOKEN=TOKEN,
    )
    code, output = _publish_grant(runner, SUBJECT)
    assert code == 0, output
    assert asyncio.run(_decision_over_https(services["consent"], stack["HTTP_CAFILE"]))
    assert asyncio.run(_followed_over_sasl_ssl(stack))
    code, output = _invoke(runner, "subject", SUBJECT)
    assert code == 0, output
    assert "marketing_email" in output
    # pg_dump over verify-full, from the same settings
    code, output = _invoke(runner, "backup", str(tmp_path / "backup"), "--schema", "consent")
    assert code == 0, output


def test_a_wrong_sasl_password_or_ca_is_refused_by_the_cli_naming_the_setting(
    stack: dict[str, str], services: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong_password"
    wrong.write_text("not-the-password\n")
    runner = _cli_env(monkeypatch, stack, KAFKA__SASL_PASSWORD_FILE=str(wrong))
    code, output = _publish_grant(runner, "usr_tls_2")
    assert code == 3
    assert "refused the SASL credentials: check KAFKA__SASL_USERNAME" in output
    monkeypatch.setenv("KAFKA__SASL_PASSWORD_FILE", stack["KAFKA__SASL_PASSWORD_FILE"])
    monkeypatch.setenv("KAFKA__SSL_CAFILE", stack["OTHER_CA"])
    code, output = _publish_grant(runner, "usr_tls_2")
    assert code == 3
    assert "TLS certificate was refused" in output
    assert "check KAFKA__SSL_CAFILE" in output
    monkeypatch.setenv("PP_CONSENT_URL", services["consent"])
    monkeypatch.setenv("PP_API_TOKEN", TOKEN)
    monkeypatch.setenv("PP_HTTP_CAFILE", stack["OTHER_CA"])
    code, output = _invoke(runner, "subject", SUBJECT)
    assert code == 2
    assert "TLS certificate was refused" in output
    assert "check PP_HTTP_CAFILE" in output


def test_the_decisions_client_refuses_a_service_its_ca_did_not_sign(
    stack: dict[str, str], services: dict[str, str]
) -> None:
    async def ask() -> None:
        async with DecisionsClient(services["consent"], TOKEN, cafile=stack["OTHER_CA"]) as client:
            await client.decide(SUBJECT, "marketing_email")

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(ask())


def _consent_settings(stack: dict[str, str], **override: Any) -> ConsentSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": stack["KAFKA_BOOTSTRAP_SERVERS"],
        "kafka": _security(stack),
        "database_url": stack["DATABASE_URL"],
        "database_sslmode": "verify-full",
        "database_sslrootcert": stack["DATABASE_SSLROOTCERT"],
        "db_schema": "consent_refused",
        "api_token": TOKEN,
        "ledger_key": LEDGER_KEY,
    }
    return ConsentSettings(**{**values, **override})


def test_a_service_refuses_to_start_with_a_wrong_ca_or_password_naming_the_setting(
    stack: dict[str, str],
) -> None:
    async def start(settings: ConsentSettings) -> str:
        runtime = build_runtime(settings)
        with pytest.raises(TransportRefused) as refused:
            async with asyncio.timeout(WAIT_S):
                await runtime.start()
        return str(refused.value)

    postgres = asyncio.run(start(_consent_settings(stack, database_sslrootcert=stack["OTHER_CA"])))
    assert "PostgreSQL's TLS certificate was refused" in postgres
    assert "check CONSENT_DATABASE_SSLROOTCERT" in postgres
    kafka_ca = asyncio.run(
        start(_consent_settings(stack, kafka=_security(stack, ssl_cafile=stack["OTHER_CA"])))
    )
    assert "check CONSENT_KAFKA__SSL_CAFILE" in kafka_ca
    password = asyncio.run(
        start(_consent_settings(stack, kafka=_security(stack, sasl_password="wrong-password")))
    )
    assert "refused the SASL credentials: check CONSENT_KAFKA__SASL_USERNAME" in password


def test_postgres_refuses_plaintext_and_accepts_verify_full_with_our_ca(
    stack: dict[str, str],
) -> None:
    async def connect(query: str) -> None:
        conn = await asyncpg.connect(stack["DATABASE_URL"] + query, timeout=WAIT_S)
        await conn.close()

    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        asyncio.run(connect("?sslmode=disable"))
    ca = stack["DATABASE_SSLROOTCERT"]
    asyncio.run(connect(f"?sslmode=verify-full&sslrootcert={ca}"))
