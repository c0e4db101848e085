"""The alert rules and Alertmanager's config, checked by Prometheus' and Alertmanager's own tools.

promtool (Debian's `prometheus`) and amtool (`prometheus-alertmanager`) must be installed:
.ci/run installs them, and these tests fail rather than skip without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTMANAGER = ROOT / "deploy" / "alertmanager"
RENDER = ALERTMANAGER / "render.sh"


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} missing: apt-get install -y {package} (.ci/run does)"
    return found


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_promtool_accepts_the_alert_rules() -> None:
    result = run(tool("promtool", "prometheus"), "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    tests = PROMETHEUS / "alerts.test.yml"
    result = run(tool("promtool", "prometheus"), "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for group in yaml.safe_load(tests.read_text())["tests"]
        for case in group["alert_rule_test"]
        if case["exp_alerts"]
    }
    for alert in (
        "PrivacyPlaneOutboxBacklog",
        "PrivacyPlaneOutboxRelayStalled",
        "PrivacyPlaneConsumerLagGrowing",
        "PrivacyPlaneDeadLetters",
        "PrivacyPlaneJobsOverdue",
        "PrivacyPlaneRequestsNearDeadline",
        "PrivacyPlaneRequestsOverdue",
        "PrivacyPlaneBackgroundRestarts",
        "PrivacyPlaneBackgroundRoundsFailing",
        "PrivacyPlaneBackgroundItemHeldBack",
        "PrivacyPlaneCheckpointOverdue",
        "PrivacyPlaneShedding",
    ):
        assert alert in tested, f"no promtool test shows {alert} firing"


def test_promtool_accepts_the_prometheus_config_with_its_alertmanager(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]  # the container's path, here
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = run(tool("promtool", "prometheus"), "check", "config", "--syntax-only", str(local))
    assert result.returncode == 0, result.stdout + result.stderr


def render(url: str | None, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "alertmanager.yml"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if url is not None:
        env["ALERT_WEBHOOK_URL"] = url
    template = str(ALERTMANAGER / "alertmanager.yml")
    return run("sh", str(RENDER), template, str(out), env=env), out


def test_amtool_accepts_the_alertmanager_config_as_shipped_and_as_rendered(
    tmp_path: Path,
) -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    shipped = run(amtool, "check-config", str(ALERTMANAGER / "alertmanager.yml"))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    url = 'https://hooks.example.com/T0/B1?a=1&b="x"|y\\z'
    result, out = render(url, tmp_path)
    assert result.returncode == 0, result.stderr
    rendered = run(amtool, "check-config", str(out))
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    receivers = yaml.safe_load(out.read_text())["receivers"]
    assert [r["webhook_configs"][0]["url"] for r in receivers] == [url]


def test_alertmanager_refuses_to_start_without_a_webhook_url(tmp_path: Path) -> None:
    for url in (None, "", "hooks.example.com/x"):
        result, out = render(url, tmp_path)
        assert result.returncode == 1, url
        assert "set ALERT_WEBHOOK_URL" in result.stderr
        assert not out.exists()


def test_every_alert_reaches_the_one_webhook_receiver() -> None:
    config = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert {r.get("receiver", config["route"]["receiver"]) for r in config["route"]["routes"]} <= (
        set(receivers)
    )
    hook = receivers[config["route"]["receiver"]]["webhook_configs"][0]
    assert hook["send_resolved"] is True
