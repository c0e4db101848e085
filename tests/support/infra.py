"""Where the tests get real Kafka and PostgreSQL.

Order: KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL from the environment; otherwise testcontainers
when a Docker engine answers; otherwise the Docker-free scripts in deploy/local/.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
POSTGRES_IMAGE = "postgres:16-alpine"


@dataclass(frozen=True)
class Infra:
    kafka: str
    database_url: str
    origin: str


def docker_available() -> bool:
    """True only when a Docker engine answers (a client binary alone is not enough)."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    with warnings.catch_warnings():
        # docker-py leaves the socket of a refused connection open; collect it here, quietly,
        # instead of in whichever test the garbage collector happens to run next
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            docker.from_env(timeout=3).ping()
        except Exception:
            return False
        finally:
            gc.collect()
    return True


def _local_env() -> dict[str, str]:
    subprocess.run([str(ROOT / "deploy/local/up")], check=True, stdout=subprocess.DEVNULL)
    state = Path(os.environ.get("PP_LOCAL_DIR", ROOT / ".local"))
    values = {}
    for line in (state / "env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key:
            values[key.strip()] = value.strip()
    return values


@contextlib.contextmanager
def provide() -> Iterator[Infra]:
    """Yield a running Kafka and PostgreSQL for the session."""
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("DATABASE_URL")
    if kafka and database:
        yield Infra(kafka, database, "environment")
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        with (
            KafkaContainer(KAFKA_IMAGE).with_kraft() as kc,
            PostgresContainer(POSTGRES_IMAGE, driver=None) as pc,
        ):
            yield Infra(
                kafka or kc.get_bootstrap_server(),
                database or pc.get_connection_url(),
                "testcontainers",
            )
        return
    env = _local_env()
    yield Infra(
        kafka or env["KAFKA_BOOTSTRAP_SERVERS"], database or env["DATABASE_URL"], "deploy/local"
    )
