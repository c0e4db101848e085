"""Write each service's AsyncAPI document (as FastStream generates it) into docs/asyncapi/.

    python -m shared.plumbing.asyncapi_export            # write docs/asyncapi/<service>.json
    python -m shared.plumbing.asyncapi_export --check    # exit 1 when a file is out of date

Each service's Runtime is built (not started: no broker or database is contacted) from
placeholder settings; the servers section names the compose broker `kafka:9092`.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from shared.plumbing.http import asyncapi_schema
from shared.plumbing.settings import ServiceSettings

if TYPE_CHECKING:
    from shared.plumbing.service import Runtime

SERVICES = ("consent", "retention", "export")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"
PLACEHOLDERS: dict[str, Any] = {
    "kafka_bootstrap_servers": "kafka:9092",
    "database_url": SecretStr("postgresql://service@postgres:5432/privacy"),
    "service_key": SecretStr(base64.b64encode(bytes(32)).decode()),  # a key of the right size
}


def placeholder_settings(cls: type[ServiceSettings]) -> ServiceSettings:
    """Settings with every required value filled by a placeholder, without validation."""
    values: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        if field.is_required():
            values[name] = PLACEHOLDERS.get(name, SecretStr("placeholder"))
    return cls.model_construct(**values)


def settings_class(module: Any) -> type[ServiceSettings]:
    """The one ServiceSettings subclass a service's settings module defines."""
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
        and value.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise LookupError(f"{module.__name__}: expected one ServiceSettings subclass, got {found}")
    return found[0]


def placeholder_runtime(service: str) -> Runtime[Any]:
    """The service's Runtime built (not started) from placeholder settings."""
    settings = placeholder_settings(
        settings_class(importlib.import_module(f"services.{service}.settings"))
    )
    runtime: Runtime[Any] = importlib.import_module(f"services.{service}.app").build_runtime(
        settings
    )
    return runtime


def document(service: str) -> str:
    """The service's AsyncAPI document as stable, indented JSON."""
    runtime = placeholder_runtime(service)
    return json.dumps(json.loads(asyncapi_schema(runtime)), indent=2, sort_keys=True) + "\n"


def export(
    name: str, document: Callable[[str], str], docs: Path, target: str, argv: list[str] | None
) -> int:
    """Write (or check, with --check) `docs/<service>.json` for every service; the CLI of both
    document exports (`name` the module, `target` the make target that refreshes them)."""
    parser = argparse.ArgumentParser(prog=f"python -m {name}")
    parser.add_argument("--out", type=Path, default=docs, help="target folder")
    parser.add_argument("--check", action="store_true", help="fail when a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for service in SERVICES:
        text = document(service)
        path: Path = args.out / f"{service}.json"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run make {target}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Write (or check) docs/asyncapi/<service>.json for every service."""
    return export("shared.plumbing.asyncapi_export", document, DOCS, "asyncapi", argv)


if __name__ == "__main__":
    sys.exit(main())
