"""Compose: every profile validates, every service scales, tracing reaches the collector.

Validated offline with Debian's docker-compose (`config`), as test_compose.py does.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.ops.test_compose import (
    COMPOSE,
    DEPLOY,
    ROOT,
    SERVICES,
    docker_compose,
    filled_env,
)

GATEWAY_CONF = DEPLOY / "gateway" / "nginx.conf"
COLLECTOR_CONF = DEPLOY / "otel" / "collector.yml"
PORTS = {"consent": 8001, "retention": 8002, "export": 8003}


def config(env: Path, *files: Path, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """What docker-compose resolves (it exits non-zero, with the reason, on an invalid file)."""
    args = [docker_compose(), "--env-file", str(env)]
    for file in (COMPOSE, *files):
        args += ["-f", str(file)]
    for profile in profiles:
        args += ["--profile", profile]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(
        [*args, "config"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=clean
    )
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def port_tuple(port: str | dict[str, Any]) -> tuple[str, int, int]:
    """(host ip, published, target) of a port in either of docker-compose's forms."""
    if isinstance(port, str):
        host_ip, published, target = port.removesuffix("/tcp").split(":")
        return host_ip, int(published), int(target)
    return port["host_ip"], int(port["published"]), int(port["target"])


def declared_profiles() -> set[str]:
    raw = yaml.safe_load(COMPOSE.read_text())
    return {p for service in raw["services"].values() for p in service.get("profiles", [])}


def test_every_profile_is_valid_alone_and_all_together(tmp_path: Path) -> None:
    env = filled_env(tmp_path)
    profiles = declared_profiles()
    assert {"cluster", "tracing"} <= profiles
    for profile in sorted(profiles):
        services = config(env, profiles=(profile,))["services"]
        assert all(name in services for name in SERVICES), profile
    everything = config(env, profiles=tuple(sorted(profiles)))["services"]
    assert {"otel-collector", "kafka-1", "gateway", *SERVICES} <= set(everything)


def test_a_scaled_deployment_is_valid_and_no_replica_claims_a_host_port(tmp_path: Path) -> None:
    """`--scale` collides on a fixed host port or container name: no service has either."""
    scaled = tmp_path / "scaled.yml"
    scaled.write_text(
        yaml.safe_dump(
            {"services": {name: {"deploy": {"replicas": 3}} for name in SERVICES}},
        )
    )
    services = config(filled_env(tmp_path), scaled)["services"]
    for name in SERVICES:
        service = services[name]
        assert service["deploy"]["replicas"] == 3, name
        assert "ports" not in service, name
        assert "container_name" not in service, name
    published = {port_tuple(port) for port in services["gateway"]["ports"]}
    assert published == {("127.0.0.1", port, port) for port in PORTS.values()}
    mount = f"{GATEWAY_CONF}:/etc/nginx/nginx.conf:ro"
    assert mount in services["gateway"]["volumes"]


def test_the_gateway_finds_every_replica_through_dockers_dns() -> None:
    text = GATEWAY_CONF.read_text()
    # a variable in proxy_pass: resolved per request (cached `valid`), every A record used;
    # each service port is HTTPS (test_gateway.py runs the file with nginx)
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", text, re.M)
    servers = re.findall(
        r"listen (\d+) ssl;\s*location / \{\s*set \$(\w+) (\S+);\s*proxy_pass \$(\w+);", text
    )
    assert {(int(port), url) for port, _, url, _ in servers} == {
        (port, f"http://{name}:8000") for name, port in PORTS.items()
    }
    assert all(variable == used for _, variable, _, used in servers)
    assert "proxy_buffering off;" in text  # bundles stream through


def test_export_replicas_share_their_storage_and_exchange_volumes(tmp_path: Path) -> None:
    resolved = config(filled_env(tmp_path))
    export = resolved["services"]["export"]
    environment = export["environment"]
    mounts = {}
    for volume in export["volumes"]:
        source, target = (
            volume.split(":")[:2]
            if isinstance(volume, str)
            else (volume["source"], volume["target"])
        )
        mounts[target] = source
    for setting in ("EXPORT_STORAGE_DIR", "EXPORT_EXCHANGE_DIR"):
        folder = environment[setting]
        # the longest mount holding the folder is a named volume: one for every replica
        holder = max((t for t in mounts if folder.startswith(t)), key=len)
        assert mounts[holder] in resolved["volumes"], setting


def test_with_tracing_the_services_send_spans_to_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = config(filled_env(tmp_path, {"PP_OTEL_ENABLED": "true"}), profiles=("tracing",))
    collector = resolved["services"]["otel-collector"]
    assert collector["profiles"] == ["tracing"]
    assert collector["image"].startswith("otel/opentelemetry-collector:")
    assert f"{COLLECTOR_CONF}:/etc/otelcol/collector.yml:ro" in collector["volumes"]
    assert "--config=/etc/otelcol/collector.yml" in collector["command"]
    conf = yaml.safe_load(COLLECTOR_CONF.read_text())
    assert conf["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    pipeline = conf["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert set(pipeline["exporters"]) <= set(conf["exporters"])
    for name in SERVICES:
        environment = resolved["services"][name]["environment"]
        assert environment[f"{name.upper()}_OTEL_ENABLED"] == "true"
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"


def test_tracing_is_off_unless_asked_for(tmp_path: Path) -> None:
    resolved = config(filled_env(tmp_path))
    # only `--profile tracing` starts it (docker-compose 1.29's `config` lists every service)
    assert resolved["services"]["otel-collector"]["profiles"] == ["tracing"]
    for name in SERVICES:
        environment = resolved["services"][name]["environment"]
        assert environment[f"{name.upper()}_OTEL_ENABLED"] == "false"
