"""The docker compose deployment: validated offline with Debian's docker-compose, then read."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.contract.topics import Topics
from shared.plumbing.settings import ServiceSettings
from shared.plumbing.topics_cli import TopicsInitSettings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
SASL_OVERRIDE = DEPLOY / "docker-compose.kafka-sasl.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
SERVICES = ("consent", "retention", "export")

# Values a real deploy/.env would hold; the example leaves secrets empty on purpose.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "CONSENT_DB_PASSWORD": "c0nsent",
    "RETENTION_DB_PASSWORD": "retenti0n",
    "EXPORT_DB_PASSWORD": "exp0rt",
    "PP_API_TOKEN": "api-token-for-tests",
    "CONSENT_LEDGER_KEY": "ledger-key-for-tests",
    "EXPORT_SERVICE_KEY": base64.b64encode(bytes(range(32))).decode(),
    "EXPORT_LINK_SECRET": "link-secret-for-tests",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose missing: apt-get install -y docker-compose (Debian 1.29.2)"
    return found


def run_compose(
    env_file: Path, *files: Path, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    args = [docker_compose(), "--env-file", str(env_file)]
    for file in files:
        args += ["-f", str(file)]
    args += ["config", "-q"] if quiet else ["config"]
    # Only PATH from the caller: compose interpolates from the shell environment first, and
    # CI exports KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL for the local stack.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT, env=clean)


def filled_env(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and value == "" and key in SECRETS:
            line = f"{key}={SECRETS[key]}"
        lines.append(line)
    lines += [f"{k}={v}" for k, v in (extra or {}).items()]
    path = tmp_path / "ci.env"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as docker-compose resolves it (variables interpolated)."""
    result = run_compose(filled_env(tmp_path_factory.mktemp("env")), COMPOSE, quiet=False)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_file_is_valid_with_the_documented_settings(tmp_path: Path) -> None:
    result = run_compose(filled_env(tmp_path), COMPOSE)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_secrets() -> None:
    result = run_compose(ENV_EXAMPLE, COMPOSE)
    assert result.returncode != 0
    assert "deploy/.env" in result.stderr


def test_sasl_override_is_valid_and_sets_every_service_prefix(tmp_path: Path) -> None:
    env = filled_env(
        tmp_path,
        {
            "KAFKA_BOOTSTRAP_SERVERS": "b1:9096",
            "KAFKA_SASL_USERNAME": "pp",
            "KAFKA_SASL_PASSWORD": "pw",
        },
    )
    result = run_compose(env, COMPOSE, SASL_OVERRIDE, quiet=False)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in SERVICES:
        prefix = name.upper()
        environment = services[name]["environment"]
        assert environment[f"{prefix}_KAFKA_BOOTSTRAP_SERVERS"] == "b1:9096"
        assert environment[f"{prefix}_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        assert environment[f"{prefix}_KAFKA__SASL_MECHANISM"].startswith("SCRAM-SHA-")
    assert services["topics-init"]["environment"]["KAFKA__SASL_USERNAME"] == "pp"


def test_topics_init_creates_every_contract_topic_with_its_policy(
    resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    init = resolved["services"]["topics-init"]
    assert init["command"][:3] == ["python", "-m", "shared.plumbing.topics_cli"]
    assert init["restart"] == "no"
    for key, value in init["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = TopicsInitSettings()  # type: ignore[call-arg]
    configs = settings.policy().configs(settings.topics)
    assert set(configs) == set(Topics().all())
    assert configs["consent.state"]["cleanup.policy"] == "compact"
    for name in Topics().kept():
        assert configs[name] == {"cleanup.policy": "delete", "retention.ms": "-1"}
    bounded = set(Topics().all()) - Topics().kept() - Topics().compacted()
    for name in bounded:
        assert configs[name]["cleanup.policy"] == "delete"
        assert int(configs[name]["retention.ms"]) > 0
    assert int(configs["privacy.deadletter"]["retention.ms"]) < int(
        configs["privacy.requests"]["retention.ms"]
    )
    for service in SERVICES:
        assert resolved["services"][service]["depends_on"]["topics-init"] == {
            "condition": "service_completed_successfully"
        }


def test_every_long_running_container_has_healthcheck_restart_and_limits(
    resolved: dict[str, Any],
) -> None:
    one_shots = {"topics-init", "db-init"}
    for name, service in resolved["services"].items():
        limits = service["deploy"]["resources"]["limits"]
        assert limits.get("cpus"), name
        assert limits.get("memory"), name
        if name in one_shots:
            assert service["restart"] == "no", name
            continue
        assert service["restart"] in ("unless-stopped", "always"), name
        assert service["healthcheck"]["test"], name
        assert not service["healthcheck"].get("disable"), name


def test_services_run_one_image_with_uvicorn_and_their_healthz(resolved: dict[str, Any]) -> None:
    images = {resolved["services"][name]["image"] for name in (*SERVICES, "topics-init")}
    assert len(images) == 1
    for name in SERVICES:
        service = resolved["services"][name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"][:3] == ["uvicorn", "--factory", f"services.{name}.app:create"]
        assert "/healthz" in " ".join(service["healthcheck"]["test"])


def test_consent_can_scale_because_it_publishes_no_host_port(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert "ports" not in services["consent"]
    assert "container_name" not in services["consent"]
    for service in services.values():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", port


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_settings_load_from_the_compose_environment(
    name: str, resolved: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's own settings class accepts what compose gives it (nothing required missing)."""
    import importlib

    module = importlib.import_module(f"services.{name}.settings")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
    ]
    assert len(classes) == 1, classes
    environment = resolved["services"][name]["environment"]
    assert all(key.startswith(f"{name.upper()}_") for key in environment)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    settings = classes[0]()
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.db_schema == name
    assert f"//{name}:" in settings.database_url.get_secret_value()
    assert settings.api_token.get_secret_value() == SECRETS["PP_API_TOKEN"]


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    used = set()
    for path in (COMPOSE, SASL_OVERRIDE):
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", path.read_text()))
    assert used - documented == set()


def run_db_init(tmp_path: Path, environment: dict[str, str]) -> tuple[int, list[list[str]]]:
    """Run deploy/init/db-init.sh with `environment` and a psql that only records its arguments
    (tests/db/deploy/test_grants.py runs grants.sql itself on a real PostgreSQL)."""
    calls = tmp_path / "psql-calls"
    fake = tmp_path / "bin" / "psql"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\037" "$@" >>"{calls}"\necho >>"{calls}"\n')
    fake.chmod(0o755)
    env = {**environment, "PATH": f"{fake.parent}:/usr/bin:/bin"}
    result = subprocess.run(
        ["sh", str(DEPLOY / "init" / "db-init.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result.returncode, [line.split("\x1f")[:-1] for line in lines]


def test_db_init_applies_the_grants_once_per_service_with_its_own_password(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    init = resolved["services"]["db-init"]
    assert init["entrypoint"] == ["sh", "/init/db-init.sh"]
    assert f"{DEPLOY / 'init'}:/init:ro" in init["volumes"]  # the script and grants.sql
    environment = {k: str(v) for k, v in init["environment"].items()}
    code, calls = run_db_init(tmp_path, environment)
    assert code == 0
    grants = str(DEPLOY / "init" / "grants.sql")
    database = environment["PGDATABASE"]
    assert calls == [
        [
            "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-v", f"svc={name}",
            "-v", f"pw={SECRETS[f'{name.upper()}_DB_PASSWORD']}",
            "-v", f"db={database}",
            "-f", grants,
        ]
        for name in SERVICES
    ]  # fmt: skip


def test_db_init_stops_before_any_grant_without_a_service_password(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    environment = {k: str(v) for k, v in resolved["services"]["db-init"]["environment"].items()}
    del environment["RETENTION_DB_PASSWORD"]
    code, calls = run_db_init(tmp_path, environment)
    assert code != 0
    ran = [next(arg for arg in call if arg.startswith("svc=")) for call in calls]
    assert ran == ["svc=consent"]  # retention's grants never ran, nor export's


def test_dockerfile_is_slim_non_root_and_caches_dependencies() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user
    assert user[-1] not in ("root", "0")
    assert text.index("COPY pyproject.toml") < text.index("COPY shared")
    assert text.index('pip install ".[services]"') < text.index("COPY shared")
