"""How the bench starts each service: its env prefix and the settings it needs beyond the shared."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from bench.harness import RESULTS, Bench, Child
from shared.contract.topics import Topics

PREFIX = {"consent": "CONSENT_", "retention": "RETENTION_", "export": "EXPORT_"}


def export_dirs(bench: Bench) -> tuple[Path, Path]:
    """Storage and exchange folders of this run's export service."""
    base = RESULTS / "work" / bench.run_id
    storage, exchange = base / "storage", base / "exchange"
    storage.mkdir(parents=True, exist_ok=True)
    exchange.mkdir(parents=True, exist_ok=True)
    return storage, exchange


def extra_env(bench: Bench, name: str) -> dict[str, str]:
    if name == "consent":
        return {"ledger_key": "bench-ledger-key-" + bench.run_id}
    if name != "export":
        return {}
    storage, exchange = export_dirs(bench)
    key = base64.b64encode(hashlib.sha256(bench.run_id.encode()).digest()).decode()
    return {
        "service_key": key,
        "link_secret": "bench-link-secret-0123456789-" + bench.run_id,
        "storage_dir": str(storage),
        "exchange_dir": str(exchange),
        "loop_interval": "0.2",
    }


async def start(
    bench: Bench, name: str, label: str, schema: str, topics: Topics, **more: str
) -> Child:
    """Start service `name` under uvicorn in its own process and wait until it is ready."""
    env = bench.service_env(PREFIX[name], schema, topics, **{**extra_env(bench, name), **more})
    child = bench.service(label, f"services.{name}.app:create", env)
    await child.wait_ready()
    return child
