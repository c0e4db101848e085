"""Where the demo finds the stack: the URLs, token and topics `make run` (deploy/local/run) uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.contract.topics import Topics

ROOT = Path(__file__).resolve().parents[1]


class SetupError(Exception):
    """The running stack cannot be found (not started, or started elsewhere)."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything the scenario talks to; tests point it at in-process services."""

    consent_url: str
    retention_url: str
    export_url: str
    token: str
    bootstrap: str
    topics: Topics = field(default_factory=Topics)
    owners_group: str = "privacy-plane-demo-owners"
    wait: float = 30.0  # seconds for any one outcome to show up


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip().strip('"').strip("'")
    return values


def from_local(root: Path = ROOT) -> DemoConfig:
    """The stack `make run` started: `.local/env` (Kafka), `.local/api-token`, ports 8001-8003."""
    state = Path(os.environ.get("PP_LOCAL_DIR") or root / ".local")
    if not state.is_absolute():
        state = Path.cwd() / state
    env_file, token_file = state / "env", state / "api-token"
    if not env_file.is_file() or not token_file.is_file():
        raise SetupError(f"{env_file} or {token_file} is missing: start the stack with `make run`")
    env = _env_file(env_file)
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise SetupError(f"KAFKA_BOOTSTRAP_SERVERS is not in {env_file}")

    def url(name: str, default: int) -> str:
        return f"http://127.0.0.1:{os.environ.get(f'PP_{name}_PORT', default)}"

    return DemoConfig(
        consent_url=url("CONSENT", 8001),
        retention_url=url("RETENTION", 8002),
        export_url=url("EXPORT", 8003),
        token=token_file.read_text().strip(),
        bootstrap=bootstrap,
    )
