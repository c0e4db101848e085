"""The checked-in JSON Schemas match the models, and no change breaks a v1 consumer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.contract.events import EVENT_TYPES
from shared.contract.schemas import SCHEMA_DIR, render, schema_for

BASELINE = Path(SCHEMA_DIR).parent / "baseline" / "v1"


def test_every_event_type_has_a_checked_in_schema_equal_to_its_model():
    checked_in = {p.stem for p in SCHEMA_DIR.glob("*.json")}
    assert checked_in == set(EVENT_TYPES), "run `make schemas` and commit the result"
    for event_type in EVENT_TYPES:
        on_disk = (SCHEMA_DIR / f"{event_type}.json").read_text()
        assert on_disk == render(event_type), f"{event_type}: run `make schemas`"


def test_every_design_event_type_exists():
    design = {
        "account.signed_up.v1", "account.closed.v1", "account.reopened.v1",
        "subscription.changed.v1", "consent.granted.v1", "consent.withdrawn.v1",
        "consent.gpc_signal.v1", "processing.restricted.v1", "processing.objected.v1",
        "restriction.lifted.v1", "erasure.requested.v1", "export.requested.v1",
        "rectification.requested.v1", "request.cancelled.v1", "request.extended.v1",
        "legal_hold.placed.v1", "legal_hold.released.v1", "deletion.completed.v1",
        "deletion.failed.v1", "rectification.completed.v1", "rectification.failed.v1",
        "export.part.v1", "export.part_failed.v1", "consent.state.v1", "deletion.job.v1",
        "export.job.v1", "rectification.job.v1", "request.status.v1",
    }  # fmt: skip
    added_1_1_restriction = {
        "restriction.job.v1", "restriction.lifted_job.v1", "restriction.completed.v1",
        "restriction.failed.v1",
    }  # fmt: skip
    rolling_retention = {"purge.job.v1", "purge.completed.v1", "purge.failed.v1"}  # 1.1.0
    disclosures = {"disclosure.recorded.v1"}  # 1.1.0
    notices = {"policy.published.v1", "notice.job.v1"}  # 1.1.0
    checkpoints = {"audit.checkpoint.v1"}  # 1.2.0
    assert (
        design | added_1_1_restriction | rolling_retention | disclosures | notices | checkpoints
        == set(EVENT_TYPES)
    )


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    return schema


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """The set of JSON types (and enum/const values) a schema admits, refs resolved."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return set().union(*(_types(s, root) for s in schema["anyOf"]))
    if "const" in schema:
        return {f"const:{schema['const']}"}
    if "enum" in schema:
        return {f"const:{v}" for v in schema["enum"]}
    return {schema.get("type", "any")}


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What in `new` would break a consumer written against `old` (same event type)."""
    problems = []
    old_root, new_root = old, new

    def walk(o: dict[str, Any], n: dict[str, Any], where: str) -> None:
        o, n = _resolve(o, old_root), _resolve(n, new_root)
        old_props, new_props = o.get("properties", {}), n.get("properties", {})
        for name, old_field in old_props.items():
            if name not in new_props:
                problems.append(f"{where}{name}: removed or renamed")
                continue
            old_types, new_types = _types(old_field, old_root), _types(new_props[name], new_root)
            if not new_types <= old_types | {"null"} and "any" not in old_types:
                problems.append(
                    f"{where}{name}: retyped {sorted(old_types)} -> {sorted(new_types)}"
                )
            walk(old_field, new_props[name], f"{where}{name}.")
        newly_required = set(n.get("required", [])) - set(o.get("required", []))
        problems.extend(f"{where}{name}: made required" for name in sorted(newly_required))

    walk(old, new, path)
    return problems


@pytest.mark.parametrize("event_type", sorted(p.stem for p in BASELINE.glob("*.json")))
def test_no_change_breaks_a_v1_consumer(event_type):
    assert event_type in EVENT_TYPES, f"{event_type} was removed: v1 types stay (add a .v2)"
    baseline = json.loads((BASELINE / f"{event_type}.json").read_text())
    assert breaking_changes(baseline, schema_for(event_type)) == []


def test_the_compatibility_check_catches_removed_retyped_and_required_fields():
    old = schema_for("account.closed.v1")
    new = json.loads(json.dumps(old))
    data = new["$defs"]["AccountClosedData"]
    del data["properties"]["reason"]
    data["properties"]["account_id"] = {"type": "integer"}
    data["required"].append("extra")
    data["properties"]["extra"] = {"type": "string"}
    found = breaking_changes(old, new)
    assert any("reason: removed" in p for p in found)
    assert any("account_id: retyped" in p for p in found)
    assert any("extra: made required" in p for p in found)


def test_adding_an_optional_field_is_not_breaking():
    old = schema_for("account.closed.v1")
    new = json.loads(json.dumps(old))
    new["$defs"]["AccountClosedData"]["properties"]["note"] = {"type": "string"}
    assert breaking_changes(old, new) == []


def test_personal_fields_are_marked_in_the_schemas():
    granted = json.loads((SCHEMA_DIR / "consent.granted.v1.json").read_text())
    evidence = granted["$defs"]["Evidence"]["properties"]
    assert evidence["ip_hash"]["x-personal"] is True
    assert evidence["user_agent"]["x-personal"] is True
    job = json.loads((SCHEMA_DIR / "rectification.job.v1.json").read_text())
    assert job["$defs"]["RectificationJobData"]["properties"]["fields"]["x-personal"] is True
