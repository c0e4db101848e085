"""Run by the interop test in the CloudEvents SDK 2.x virtualenv, with docs/examples/python_sdk2.py.

stdin: {"produce": [{"modes", "type", "subject", "source", "data"}...],
        "read": [{"key", "value", "headers": [[name, value]]}...]} (bytes in base64).
stdout: {"produced": [{"mode", "key", "value", "headers"}...] (one event per spec, sent in
        each of its modes),
         "read": [{"type", "id", "source", "subject", "datacontenttype", "data"} or {"error"}]}.
Standard library and the SDK only.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "docs" / "examples"))

import python_sdk2 as example  # type: ignore[import-not-found]  # the doc's file


def b64(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


def produce(spec: dict[str, Any]) -> list[dict[str, Any]]:
    event = example.new_event(spec["type"], spec["subject"], spec["data"], spec["source"])
    out = []
    for mode in spec["modes"]:
        message = (example.binary if mode == "binary" else example.structured)(event)
        out.append(
            {
                "mode": mode,
                "key": b64(message.key),
                "value": b64(message.value),
                "headers": [[name, b64(value)] for name, value in message.headers.items()],
            }
        )
    return out


def read(record: dict[str, Any]) -> dict[str, Any]:
    value = base64.b64decode(record["value"])
    key = None if record["key"] is None else base64.b64decode(record["key"])
    headers = [(name, base64.b64decode(raw)) for name, raw in record["headers"]]
    try:
        event = example.read(key, value, headers)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "type": event.get_type(),
        "id": event.get_id(),
        "source": event.get_source(),
        "subject": event.get_subject(),
        "datacontenttype": event.get_datacontenttype(),
        "data": event.get_data(),
    }


def main() -> None:
    request = json.load(sys.stdin)
    report = {
        "produced": [m for spec in request.get("produce", []) for m in produce(spec)],
        "read": [read(record) for record in request.get("read", [])],
    }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
