"""The consent service with a relay batch the fault suite can hold in flight on demand.

`python -m shared.plumbing.serve tests.faults.fencing_app:create` with `PP_FENCE_DIR` (a
folder): when `<dir>/pause` holds "<round> <seconds>" for a round no process has paused for yet, the relay's
next batch stops inside its first `send_batch`, before any of it reaches the broker:
the process writes `<dir>/paused.<round>` (its pid), sleeps, then writes `<dir>/resumed.<round>`
and goes on sending, as a leader whose batch was slow would.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.consent.app import build_runtime
from services.consent.settings import ConsentSettings
from shared.plumbing.logging import configure_logging
from shared.plumbing.service import Runtime


class Pauser:
    """Holds the first `send_batch` after each new round number for `seconds`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.done: set[str] = set()

    def wrap(self, producer: AIOKafkaProducer) -> AIOKafkaProducer:
        """`producer` with a pausable `send_batch`."""
        real_send_batch = producer.send_batch

        async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
            await self.maybe_pause()
            return await real_send_batch(batch, topic, partition=partition)

        producer.send_batch = send_batch  # type: ignore[method-assign]
        return producer

    async def maybe_pause(self) -> None:
        try:
            round_, seconds = (self.folder / "pause").read_text().split()
        except (FileNotFoundError, ValueError):  # none asked, or being written
            return
        if round_ in self.done:
            return
        self.done.add(round_)
        try:  # one replica per round: the first to get here
            with (self.folder / f"paused.{round_}").open("x") as claim:
                claim.write(str(os.getpid()))
        except FileExistsError:
            return
        await asyncio.sleep(float(seconds))
        (self.folder / f"resumed.{round_}").write_text(str(os.getpid()))


def install(runtime: Runtime[Any], pauser: Pauser) -> None:
    """Make the relay's producer, and every one it makes later, pausable."""
    relay = runtime.relay
    assert relay is not None
    pauser.wrap(relay.producer)
    make = relay._new_producer
    if make is not None:
        relay._new_producer = lambda: pauser.wrap(make())


def create() -> FastAPI:
    """The consent service's ASGI app with the pausable relay."""
    settings = ConsentSettings()  # type: ignore[call-arg]
    configure_logging(settings.log_format, settings.log_level)
    runtime = build_runtime(settings)
    pauser = Pauser(Path(os.environ["PP_FENCE_DIR"]))
    real_start = runtime.start

    async def start() -> None:
        await real_start()
        install(runtime, pauser)

    runtime.start = start  # type: ignore[method-assign]
    return runtime.asgi()
