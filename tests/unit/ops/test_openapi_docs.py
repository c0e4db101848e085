"""The OpenAPI documents in docs/openapi/ match what the services generate, and say enough."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.plumbing.asyncapi_export import SERVICES
from shared.plumbing.http import API_VERSION
from shared.plumbing.openapi_export import DOCS, document, main

SIGNED_LINK = {("export", "/v1/downloads/{bundle_id}")}
PAGED = {
    ("retention", "/v1/retention/dry-run"),
    ("retention", "/v1/jobs"),
    ("retention", "/v1/requests"),
    ("retention", "/v1/holds"),
}


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


@pytest.mark.parametrize("service", SERVICES)
def test_exported_document_is_current(service: str) -> None:
    text = document(service)
    assert (DOCS / f"{service}.json").read_text() == text, (
        "run: python -m shared.plumbing.openapi_export"
    )
    spec = json.loads(text)
    assert spec["openapi"].startswith("3.")
    assert spec["info"] == {"title": f"Privacy Plane {service}", "version": API_VERSION}


def test_check_mode_reports_a_stale_file(tmp_path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "retention.json").write_text("{}\n")
    assert main(["--out", str(tmp_path), "--check"]) == 1


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_has_a_typed_answer_and_the_bearer_scheme_unless_signed(service: str) -> None:
    spec = json.loads((DOCS / f"{service}.json").read_text())
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The service's API token (API_TOKEN): `Authorization: Bearer <token>`.",
    }
    ops = operations(spec)
    assert ops
    for path, method, op in ops:
        assert not path.startswith(("/healthz", "/readyz", "/metrics", "/docs", "/openapi"))
        ok = op["responses"]["200"]["content"]
        if (service, path) in SIGNED_LINK:
            assert "security" not in op, path
            assert list(ok) == ["application/zip"]
            continue
        assert op["security"] == [{"bearer": []}], (method, path)
        assert "401" in op["responses"], (method, path)
        schema = ok["application/json"]["schema"]
        assert "$ref" in schema, (method, path, schema)  # a model, not a bare object


def test_list_routes_take_a_bounded_limit_and_a_cursor_and_answer_next() -> None:
    for service, path in PAGED:
        spec = json.loads((DOCS / f"{service}.json").read_text())
        op = spec["paths"][path]["get"]
        params = {p["name"]: p["schema"] for p in op["parameters"]}
        assert params["limit"]["maximum"] == 1000
        assert params["limit"]["default"] == 100
        assert "after" in params
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        body = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert "next" in body["properties"], path
