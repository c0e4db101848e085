"""What every command shares: settings from the environment, one-line errors, Kafka, HTTP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import httpx
import typer
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError
from pydantic_settings import SettingsConfigDict
from rich.console import Console
from rich.progress import Progress

from shared.contract.codec import encode, kafka_headers
from shared.contract.envelope import CloudEvent
from shared.contract.topics import Topics
from shared.plumbing import tls
from shared.plumbing.kafka import make_producer
from shared.plumbing.keyring import KeyringError, parse_keyring
from shared.plumbing.settings import KafkaSecurity

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

SOURCE = "privacy-plane.cli"


class CliError(Exception):
    """A failure the operator can act on; printed as one line."""


def env(name: str, default: str | None = None) -> str:
    """The setting `PP_<name>` (or `<name>`), else `default`; CliError when neither is set."""
    value = os.environ.get(f"PP_{name}") or os.environ.get(name) or default
    if value is None:
        raise CliError(f"set PP_{name} (or {name})")
    return value


class _PrefixedKafkaSecurity(KafkaSecurity):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="KAFKA__")


def kafka_security() -> KafkaSecurity:
    """Kafka TLS / SASL from `KAFKA__SECURITY_PROTOCOL`, `KAFKA__SASL_…`, `KAFKA__SSL_CAFILE` (as
    topics-init and `deploy/local/up --tls` name them), else from the older unprefixed names."""
    if any(name.upper().startswith("KAFKA__") for name in os.environ):
        return _PrefixedKafkaSecurity()
    return KafkaSecurity()


def database_url() -> str:
    """`PP_DATABASE_URL` / `DATABASE_URL` with `DATABASE_SSLMODE` / `DATABASE_SSLROOTCERT` in it."""
    return tls.postgres_dsn(
        env("DATABASE_URL"),
        env("DATABASE_SSLMODE", "") or None,
        env("DATABASE_SSLROOTCERT", "") or None,
    )


def http_verify() -> Any:
    """How API calls check an https service: `PP_HTTP_CAFILE` / `HTTP_CAFILE`, else system CAs."""
    return tls.http_verify(env("HTTP_CAFILE", "") or None)


def api_token() -> str:
    """`PP_API_TOKEN`: a token, or a whole API-token keyring (its current token is sent)."""
    try:
        return parse_keyring(env("API_TOKEN")).current.value
    except KeyringError as exc:
        raise CliError(f"PP_API_TOKEN: {exc}") from None


def topics() -> Topics:
    """The contract's topics, prefixed by `PP_TOPIC_PREFIX` (tests give each run its own)."""
    return Topics().with_prefix(os.environ.get("PP_TOPIC_PREFIX", ""))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a Kafka command; its failures print one line and exit 2 (operator) or 3 (broker)."""
    try:
        return asyncio.run(coro)
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except MessageSizeTooLargeError as exc:
        err.print(f"[red]error:[/red] the event is larger than the broker accepts: {exc}")
        raise typer.Exit(2) from None
    except (KafkaError, OSError) as exc:
        bootstrap = env("KAFKA_BOOTSTRAP_SERVERS", "?")
        reason = _refusal(bootstrap) if isinstance(exc, KafkaConnectionError) else None
        err.print(f"[red]error:[/red] Kafka at {bootstrap}: {reason or exc}")
        raise typer.Exit(3) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(3) from None


def _refusal(bootstrap: str) -> str | None:
    """Why Kafka refused us, when TLS or SASL is the cause (aiokafka says "Unable to bootstrap")."""
    security = kafka_security()
    if security.security_protocol == "PLAINTEXT":
        return None
    return asyncio.run(tls.kafka_refusal(bootstrap, security.client_kwargs(), ""))


Item = tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]
"""A record to produce: topic, key, value, headers."""


def event_item(topic: str, event: CloudEvent[Any]) -> Item:
    """The record of a contract event, as the services publish it (structured mode)."""
    key, value = encode(event)
    return topic, key, value, [(k, v.encode()) for k, v in kafka_headers().items()]


async def send_all(items: Sequence[Item], label: str) -> None:
    """Produce (topic, key, value, headers) items with an idempotent producer and a progress bar."""
    producer = make_producer(
        env("KAFKA_BOOTSTRAP_SERVERS"), kafka_security(), request_timeout_ms=15000
    )
    try:
        await producer.start()
        with Progress(console=err, transient=len(items) < 50) as progress:
            task = progress.add_task(label, total=len(items))
            for topic, key, value, headers in items:
                await (await producer.send(topic, value=value, key=key, headers=list(headers)))
                progress.advance(task)
    finally:
        await producer.stop()


SERVICES = {"consent": "8001", "retention": "8002", "export": "8003"}
PAGE_SIZE = 1000  # the services' largest page


def api(service: str, path: str, **params: Any) -> Any:
    """GET a service API path with the bearer token; raise CliError on failure."""
    base = env(f"{service.upper()}_URL", f"http://127.0.0.1:{SERVICES[service]}")
    headers = {"Authorization": f"Bearer {api_token()}"}
    query = {k: v for k, v in params.items() if v is not None}
    try:
        response = httpx.get(
            f"{base}{path}", params=query, headers=headers, timeout=10, verify=http_verify()
        )
    except httpx.HTTPError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            refused = f"{service} at {base}: its TLS certificate was refused ({exc})"
            raise CliError(f"{refused}: check PP_HTTP_CAFILE") from None
        if isinstance(exc, httpx.RemoteProtocolError) and base.startswith("http://"):
            # what an HTTPS-only port (compose's gateway) does with plain HTTP: closes it
            hint = f"if it serves HTTPS, set PP_{service.upper()}_URL=https://… and PP_HTTP_CAFILE"
            closed = f"{service} at {base} closed the connection unanswered"
            raise CliError(f"{closed}: {hint}") from None
        raise CliError(f"{service} at {base} is not answering: {exc}") from None
    if response.status_code >= 400:
        raise CliError(f"{service} {path}: {response.status_code} {response.text[:300]}")
    return response.json()


def pages(service: str, path: str, **params: Any) -> Iterator[Any]:
    """Each page of a paged list route, following its `next` cursor to the end."""
    after = None
    while True:
        page = api(service, path, limit=PAGE_SIZE, after=after, **params)
        yield page
        after = page.get("next")
        if not after:
            return


def every(service: str, path: str, key: str, **params: Any) -> list[Any]:
    """The items under `key` of every page of a paged list route."""
    return [item for page in pages(service, path, **params) for item in page[key]]


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `fn`; a CliError prints one line and exits 2."""
    try:
        return fn(*args, **kwargs)
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
