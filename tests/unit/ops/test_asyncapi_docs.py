"""The AsyncAPI documents in docs/asyncapi/ match what the services generate."""

from __future__ import annotations

import json

import pytest

from shared.plumbing.asyncapi_export import DOCS, SERVICES, document, main


@pytest.mark.parametrize("service", SERVICES)
def test_exported_document_is_current_and_lists_the_consumed_topics(service: str) -> None:
    text = document(service)
    assert (DOCS / f"{service}.json").read_text() == text, (
        "run: python -m shared.plumbing.asyncapi_export"
    )
    spec = json.loads(text)
    assert spec["asyncapi"].startswith("3.")
    assert spec["info"]["title"] == f"Privacy Plane {service}"
    assert spec["channels"]


def test_check_mode_reports_a_stale_file(tmp_path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "consent.json").write_text("{}\n")
    assert main(["--out", str(tmp_path), "--check"]) == 1


def test_each_document_describes_what_the_service_publishes_with_the_contract_schemas() -> None:
    import json

    expected = {
        "consent": {"consent.state": "ConsentState", "privacy.receipts": "ExportPart"},
        "retention": {
            "privacy.jobs": "DeletionJob",
            "privacy.requests.status": "RequestStatusChanged",
        },
        "export": {"privacy.jobs": "ExportJob", "privacy.requests.status": "RequestStatusChanged"},
    }
    for service, topics in expected.items():
        doc = json.loads((DOCS / f"{service}.json").read_text())
        for topic, model in topics.items():
            assert f"{service}:{topic}" in doc["channels"], (service, topic)
            assert model in doc["components"]["schemas"], (service, model)
        assert f"{service}:privacy.deadletter" in doc["channels"]
