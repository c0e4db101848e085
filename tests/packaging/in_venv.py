"""Run by the packaging test inside a fresh virtualenv holding only the contract wheel.

Reads the examples (and the expected version) as JSON from argv[1]; prints a JSON report of
what the installed `privacy_plane.contract` did with them. Standard library and the wheel only.
"""

from __future__ import annotations

import base64
import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

DISTRIBUTION = "privacy-plane-contract"


def round_trip(contract: Any, events: Any, event_type: str, data: dict[str, Any]) -> str:
    """Build, encode and decode one event; "ok" or what went wrong."""
    model = events.EVENT_TYPES[event_type]
    data_model = model.model_fields["data"].annotation
    event = contract.new_event(
        model, subject="usr_42", data=data_model.model_validate(data), source="packaging"
    )
    key, value = contract.encode(event)
    decoded = contract.decode(value)
    if key != b"usr_42":
        return f"key {key!r}"
    if type(decoded) is not model or decoded != event:
        return f"decoded as {type(decoded).__name__}: {decoded!r}"
    return "ok"


def rejected(contract: Any, event_type: str, data: dict[str, Any]) -> bool:
    """Whether decode refuses the example with its data broken or its subject empty."""
    envelope = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "packaging",
        "type": event_type,
        "subject": "usr_42",
        "time": "2026-12-06T10:00:00Z",
        "datacontenttype": "application/json",
    }
    refused = 0
    for broken in ({**envelope, "data": [data]}, {**envelope, "subject": "", "data": data}):
        try:
            contract.decode(json.dumps(broken).encode())
        except contract.DecodeError:
            refused += 1
    return refused == 2


def sealed_part_opens(sealing: Any) -> bool:
    """An inline export part sealed to a job's key opens with the private key (PyNaCl)."""
    from nacl.public import PrivateKey

    private = PrivateKey.generate()
    public_b64 = base64.b64encode(bytes(private.public_key)).decode()
    records = [{"email": "a@example.com"}]
    sealed, digest = sealing.seal_records(public_b64, records)
    opened = sealing.open_sealed(bytes(private), sealed)
    return bool(json.loads(opened) == records and re.fullmatch(r"[0-9a-f]{64}", digest))


def importable(name: str) -> bool:
    """Whether `import <name>` works here."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        return False
    return True


def py_typed(package: str) -> bool:
    """Whether the installed package has its `py.typed` marker (found without importing it)."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    return any((Path(folder) / "py.typed").is_file() for folder in folders)


def main() -> None:
    """Print the report."""
    given = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    contract = importlib.import_module("privacy_plane.contract")
    events = importlib.import_module("privacy_plane.contract.events")
    sealing = importlib.import_module("privacy_plane.contract.sealing")
    schemas = importlib.resources.files("privacy_plane.contract") / "schemas"
    try:
        importlib.import_module("privacy_plane.consent_client")
        without_client_extra = None
    except ImportError as exc:
        without_client_extra = exc.name
    report = {
        "version": contract.__version__,
        "distribution_version": importlib.metadata.version(DISTRIBUTION),
        "requires": importlib.metadata.requires(DISTRIBUTION),
        "top_level": sorted(
            {str(f).split("/")[0] for f in importlib.metadata.files(DISTRIBUTION) or []}
        ),
        "py_typed": {
            name: py_typed(name)
            for name in ("privacy_plane.contract", "privacy_plane.consent_client")
        },
        "types": sorted(events.EVENT_TYPES),
        "round_trips": {
            t: round_trip(contract, events, t, d) for t, d in given["examples"].items()
        },
        "rejected": {t: rejected(contract, t, d) for t, d in given["examples"].items()},
        "schema_versions": {
            t: json.loads((schemas / f"{t}.json").read_text()).get("x-contract-version")
            for t in events.EVENT_TYPES
        },
        "sealed_part_opens": sealed_part_opens(sealing),
        "importable": {name: importable(name) for name in ("shared", "services")},
        "consent_client_without_extra": without_client_extra,
    }
    sys.stdout.write(json.dumps(report))


if __name__ == "__main__":
    main()
