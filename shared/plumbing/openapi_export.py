"""Write each service's OpenAPI document (as FastAPI generates it) into docs/openapi/.

    python -m shared.plumbing.openapi_export            # write docs/openapi/<service>.json
    python -m shared.plumbing.openapi_export --check    # exit 1 when a file is out of date

The same document a running service serves at `/openapi.json` (behind its bearer token). Each
service's Runtime is built (not started: nothing is contacted) from placeholder settings, as
for the AsyncAPI documents.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.plumbing.asyncapi_export import export, placeholder_runtime

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"


def document(service: str) -> str:
    """The service's OpenAPI document as stable, indented JSON."""
    spec = placeholder_runtime(service).asgi().openapi()
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or check) docs/openapi/<service>.json for every service."""
    return export("shared.plumbing.openapi_export", document, DOCS, "openapi", argv)


if __name__ == "__main__":
    sys.exit(main())
