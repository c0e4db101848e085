"""Prometheus scrape config, alert rules with runbooks, and the provisioned Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

# Importing these registers the pp_* metrics the alerts and the dashboard use.
import services.export.metrics
import services.retention.loops  # noqa: F401
import shared.plumbing.metrics  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
SERVICES = ("consent", "retention", "export")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def known_metric_names() -> set[str]:
    names: set[str] = set()
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    for metric in REGISTRY.collect():  # labelled metrics have no samples before first use
        names.update(metric.name + suffix for suffix in suffixes)
    return {n for n in names if n.startswith("pp_")}


def pp_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(pp_[a-z_]+)", expr))


def test_every_service_is_scraped_by_dns_discovery_so_replicas_count() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        discovery = jobs[name]["dns_sd_configs"][0]
        assert discovery["names"] == [name]
        assert discovery["type"] == "A"
        assert discovery["port"] == 8000
    readiness = jobs["readiness"]
    assert set(readiness["dns_sd_configs"][0]["names"]) == set(SERVICES)
    replacements = [r.get("replacement", "") for r in readiness["relabel_configs"]]
    assert "http://${1}/readyz" in replacements
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


RUNBOOK_BASE = "{{ $externalLabels.runbook_base_url }}/"


def test_every_alert_links_a_runbook_that_exists() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        # An absolute URL: the base (where docs/runbooks/ is published) + the page.
        assert url.startswith(RUNBOOK_BASE), rule["alert"]
        assert url.endswith(".md"), rule["alert"]
        runbook = ROOT / "docs" / "runbooks" / url.removeprefix(RUNBOOK_BASE)
        assert runbook.is_file(), url
        text = runbook.read_text()
        assert rule["alert"] in text, f"{url} does not name {rule['alert']}"
        for section in ("**Means.**", "**Check.**", "**Do.**"):
            assert section in text, f"{url} lacks {section}"


def test_the_runbook_base_is_an_external_label_from_a_required_variable() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert config["global"]["external_labels"]["runbook_base_url"] == "${PP_RUNBOOK_BASE_URL}"
    dropped = config["alerting"]["alert_relabel_configs"]
    assert {"action": "labeldrop", "regex": "runbook_base_url"} in dropped
    compose = load_yaml(ROOT / "deploy" / "docker-compose.yml")
    environment = compose["services"]["prometheus"]["environment"]
    assert environment["PP_RUNBOOK_BASE_URL"].startswith("${PP_RUNBOOK_BASE_URL:?")


def test_alerts_cover_what_on_call_must_act_on() -> None:
    expressions = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    wanted = {
        "PrivacyPlaneConsumerLagGrowing": "pp_consumer_lag",
        "PrivacyPlaneDeadLetters": "pp_events_deadlettered_total",
        "PrivacyPlaneJobsOverdue": "pp_retention_jobs_overdue",
        "PrivacyPlaneRequestsNearDeadline": "pp_requests_due_soon",
        "PrivacyPlaneRequestsOverdue": 'pp_requests{overdue="true"',
        "PrivacyPlaneOutboxBacklog": "pp_outbox_backlog",
        "PrivacyPlaneOutboxRelayStalled": "pp_outbox_relay_heartbeat_timestamp_seconds",
        "PrivacyPlaneBackgroundRestarts": "pp_background_restarts_total",
        "PrivacyPlaneServiceNotReady": 'probe_success{job="readiness"}',
        "PrivacyPlaneServiceDown": "up{",
    }
    for alert, fragment in wanted.items():
        assert fragment in expressions[alert], alert
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_alerts_and_dashboard_use_only_metrics_that_exist() -> None:
    known = known_metric_names()
    exprs = [rule["expr"] for rule in alert_rules()]
    dashboard = json.loads((GRAFANA / "dashboards" / "privacy-plane.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set().union(*(pp_names(e) for e in exprs))
    assert used - known == set()


def test_dashboard_shows_lag_throughput_dead_letters_jobs_and_deadlines() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "privacy-plane.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for fragment in (
        "pp_consumer_lag",
        "rate(pp_events_processed_total",
        "pp_events_deadlettered_total",
        "pp_retention_jobs_overdue",
        "pp_requests_due_soon",
        "pp_outbox_backlog",
    ):
        assert fragment in exprs, fragment
    datasource = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in panels} == {uid}


def test_grafana_provisioning_points_at_the_mounted_dashboards() -> None:
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "privacy-plane.yml")
    compose = load_yaml(ROOT / "deploy" / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
