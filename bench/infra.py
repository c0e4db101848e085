"""Kafka and PostgreSQL for the run.

Default (`BENCH_INFRA=private`): a private pair started with `deploy/local/up` in its own state
folder and free ports, and purged at the end — so other work on the machine (tests, the fault suite
restarting the shared broker) neither disturbs the figures nor is disturbed by them.
`BENCH_INFRA=shared`: whatever the tests use (`tests.support.infra.provide()`: the environment's
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, Docker, or the shared deploy/local instance), with
DATABASE_SSLMODE / DATABASE_SSLROOTCERT written into the URL every connection of the run opens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.harness import RESULTS, ROOT, free_port
from shared.plumbing.tls import postgres_dsn


@dataclass(frozen=True)
class Infra:
    kafka: str
    database_url: str
    origin: str
    restart: Callable[[], tuple[str, str]] | None = None
    """Start again whatever is down (private mode; `deploy/local/up` is idempotent)."""


def _read_env(path: str) -> dict[str, str]:
    values = {}
    with open(path) as handle:
        for line in handle:
            key, _, value = line.strip().partition("=")
            if key:
                values[key] = value
    return values


@contextlib.contextmanager
def private() -> Iterator[Infra]:
    """A private Kafka + PostgreSQL under `bench/results/infra/<id>` on free ports."""
    state = RESULTS / "infra" / f"{os.getpid()}-{free_port()}"
    env = {
        **os.environ,
        "PP_LOCAL_DIR": str(state),
        "PP_KAFKA_PORT": str(free_port()),
        "PP_KAFKA_CONTROLLER_PORT": str(free_port()),
        "PP_PG_PORT": str(free_port()),
    }
    scripts = ROOT / "deploy" / "local"

    def up() -> tuple[str, str]:
        subprocess.run([str(scripts / "up")], env=env, check=True, stdout=subprocess.DEVNULL)
        values = _read_env(str(state / "env"))
        return values["KAFKA_BOOTSTRAP_SERVERS"], values["DATABASE_URL"]

    try:
        kafka, database_url = up()
        yield Infra(kafka, database_url, "private deploy/local", restart=up)
    finally:
        subprocess.run(
            [str(scripts / "down"), "--purge"], env=env, check=False, stdout=subprocess.DEVNULL
        )
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def provide() -> Iterator[Infra]:
    """The infrastructure BENCH_INFRA asks for (private by default)."""
    if os.environ.get("BENCH_INFRA", "private") == "shared":
        from tests.support.infra import provide as shared

        with shared() as found:
            # PostgreSQL TLS as the services and the CLI take it (libpq's sslmode, sslrootcert)
            url = postgres_dsn(
                found.database_url,
                os.environ.get("DATABASE_SSLMODE") or None,
                os.environ.get("DATABASE_SSLROOTCERT") or None,
            )
            yield Infra(found.kafka, url, f"shared ({found.origin})")
        return
    with private() as found:
        yield found
