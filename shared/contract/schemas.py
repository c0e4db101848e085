"""JSON Schemas of the contract, generated from the models into `shared/contract/schemas/`.

Run `python -m shared.contract.schemas` after changing a model; a test fails while the
checked-in files and the models disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .events import EVENT_TYPES

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_for(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type, with its `$id` and the contract version it belongs to."""
    schema = EVENT_TYPES[event_type].model_json_schema(mode="validation")
    # The `$id` stays put across releases (the type name carries the major version); the
    # release that last generated the schema is an annotation, as for the AsyncAPI documents.
    schema["$id"] = f"https://privacy-plane.dev/schemas/{event_type}.json"
    schema["x-contract-version"] = __version__
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render(event_type: str) -> str:
    """The exact text checked in for one event type."""
    return json.dumps(schema_for(event_type), indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type in sorted(EVENT_TYPES):
        path = directory / f"{event_type}.json"
        path.write_text(render(event_type))
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_all():
        sys.stdout.write(f"{written_path}\n")
