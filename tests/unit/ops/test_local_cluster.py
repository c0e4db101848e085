"""deploy/local --brokers N: argument handling only (the fault suite starts the real cluster)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LOCAL = ROOT / "deploy" / "local"


def run(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PP_LOCAL_DIR": str(tmp_path), "PP_CLUSTER_BASE_PORT": "1"}
    return subprocess.run(
        [str(LOCAL / script), *args], capture_output=True, text=True, timeout=30, env=env
    )


@pytest.mark.parametrize("script", ["up", "down", "env", "status"])
def test_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(LOCAL / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("count", ["2", "0", "x", "10"])
def test_a_cluster_size_without_a_surviving_quorum_is_refused(tmp_path: Path, count: str) -> None:
    result = run(tmp_path, "up", "--brokers", count)
    assert result.returncode != 0
    assert "--brokers" in result.stderr


def test_the_cluster_is_kafka_only(tmp_path: Path) -> None:
    result = run(tmp_path, "up", "--brokers", "3", "postgres")
    assert result.returncode != 0
    assert "Kafka cluster only" in result.stderr


def test_the_cluster_has_its_own_env_file_naming_every_node(tmp_path: Path) -> None:
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "env").write_text("KAFKA_BOOTSTRAP_SERVERS=a:1,b:2,c:3\n")
    (tmp_path / "env").write_text("KAFKA_BOOTSTRAP_SERVERS=single:1\n")
    cluster = run(tmp_path, "env", "--brokers", "3")
    single = run(tmp_path, "env")
    assert cluster.stdout.strip() == "export KAFKA_BOOTSTRAP_SERVERS=a:1\\,b:2\\,c:3"
    assert single.stdout.strip() == "export KAFKA_BOOTSTRAP_SERVERS=single:1"


def test_help_names_the_option() -> None:
    result = subprocess.run([str(LOCAL / "up"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--brokers" in result.stdout
