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
    env_file: Path, *files: Path, quiet: bool = True, profile: str = ""
) -> subprocess.CompletedProcess[str]:
    args = [docker_compose(), "--env-file", str(env_file)]
    for file in files:
        args += ["-f", str(file)]
    if profile:
        args += ["--profile", profile]
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


def test_db_init_gives_each_service_its_own_role_and_schema(resolved: dict[str, Any]) -> None:
    init = resolved["services"]["db-init"]
    assert init["entrypoint"] == ["sh", "/init/db-init.sh"]
    script = (DEPLOY / "init" / "db-init.sh").read_text()
    grants = (DEPLOY / "init" / "grants.sql").read_text()
    assert "for svc in consent retention export" in script
    assert "REVOKE ALL ON SCHEMA %I FROM PUBLIC" in grants
    assert "AUTHORIZATION %I" in grants
    assert "GRANT CONNECT ON DATABASE %I TO %I" in grants  # and no CREATE on it
    for name in SERVICES:
        assert f"{name.upper()}_DB_PASSWORD" in init["environment"]


def test_dockerfile_is_slim_non_root_and_caches_dependencies() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user
    assert user[-1] not in ("root", "0")
    assert text.index("COPY pyproject.toml") < text.index("COPY shared")
    assert text.index('pip install ".[services]"') < text.index("COPY shared")


CLUSTER = ("kafka-1", "kafka-2", "kafka-3")


def test_cluster_profile_is_three_voters_and_its_topics_get_replication_3_min_isr_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--profile cluster` with the documented settings: three voting nodes, RF 3, min ISR 2."""
    bootstrap = ",".join(f"{node}:9092" for node in CLUSTER)
    env = filled_env(
        tmp_path,
        {
            "PP_KAFKA_BOOTSTRAP": bootstrap,
            "TOPIC_REPLICATION": "3",
            "TOPIC_MIN_INSYNC_REPLICAS": "2",
        },
    )
    result = run_compose(env, COMPOSE, quiet=False, profile="cluster")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    nodes = [services[name] for name in CLUSTER]
    voters = {f"{n}@{name}:9093" for n, name in enumerate(CLUSTER, 1)}
    for n, (name, node) in enumerate(zip(CLUSTER, nodes, strict=True), 1):
        environment = node["environment"]
        assert node["profiles"] == ["cluster"], name
        assert int(environment["KAFKA_NODE_ID"]) == n
        assert set(environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert environment["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert int(environment["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(environment["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert int(environment["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2
    assert len({node["environment"]["CLUSTER_ID"] for node in nodes}) == 1
    assert len({node["volumes"][0].split(":")[0] for node in nodes}) == 3
    assert "profiles" not in services["kafka"]  # the single node stays the default
    for name in SERVICES:
        key = f"{name.upper()}_KAFKA_BOOTSTRAP_SERVERS"
        assert services[name]["environment"][key] == bootstrap
    init = services["topics-init"]["environment"]
    assert init["KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
    for key, value in init.items():
        monkeypatch.setenv(key, str(value))
    policy = TopicsInitSettings().policy()  # type: ignore[call-arg]
    assert policy.replication == 3
    configs = policy.configs(Topics())
    assert {c["min.insync.replicas"] for c in configs.values()} == {"2"}


def test_single_node_topics_leave_min_isr_to_the_broker(resolved: dict[str, Any]) -> None:
    init = resolved["services"]["topics-init"]["environment"]
    assert init["TOPIC_MIN_INSYNC_REPLICAS"] == ""
    assert resolved["services"]["consent"]["environment"]["CONSENT_KAFKA_BOOTSTRAP_SERVERS"] == (
        "kafka:9092"
    )
