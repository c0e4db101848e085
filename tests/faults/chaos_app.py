"""Run any service's runtime with a planned SIGKILL at a precise point of its work.

`uvicorn --factory tests.faults.chaos_app:create` with
- `PP_FAULT_APP`: the service's app module (`services.consent.app`, `tests.faults.toy_app`),
  which has `build_runtime(settings, clock=None)`; its settings class is the
  `ServiceSettings` subclass in `<package>.settings` (or in the app module itself);
- `PP_FAULT_KILL`: `<point>:<n>` — the process kills itself with SIGKILL at the n-th time it
  reaches `point`:
  - `apply`: inside the database transaction, after the handler ran, before the commit;
  - `commit`: after the transaction committed, before the Kafka offsets are committed;
  - `relay`: after the outbox relay published a record (counted per record of the batches it
    sends), before it deletes the outbox row.
  Empty or absent: no planned kill (the harness may still kill the process from outside).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import signal
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from fastapi import FastAPI

from shared.plumbing.db import Conn
from shared.plumbing.logging import configure_logging
from shared.plumbing.pipeline import Batch, RecordLike
from shared.plumbing.service import Runtime
from shared.plumbing.settings import ServiceSettings

KILL_MARK = "PP_FAULT_KILL_REACHED"


def settings_class(app: ModuleType) -> type[ServiceSettings]:
    """The ServiceSettings subclass of the service whose app module is `app`."""
    package = app.__name__.rpartition(".")[0]
    candidates: list[ModuleType] = [app]
    with contextlib.suppress(ModuleNotFoundError):
        candidates.insert(0, importlib.import_module(f"{package}.settings"))
    for module in candidates:
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, ServiceSettings)
                and value is not ServiceSettings
                and value.__module__ == module.__name__
            ):
                return value
    raise LookupError(f"no ServiceSettings subclass for {app.__name__}")


class KillPlan:
    """Counts arrivals at one point and dies at the planned one."""

    def __init__(self, spec: str) -> None:
        point, _, count = spec.partition(":")
        self.point = point
        self.remaining = int(count or "1")

    def reached(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            os.write(2, f"{KILL_MARK} point={point}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)


def install(runtime: Runtime[Any], plan: KillPlan) -> None:
    """Wrap the pipeline and the relay's producer so that `plan` sees each point."""
    pipeline, relay = runtime.pipeline, runtime.relay
    assert pipeline is not None
    assert relay is not None
    real_apply, real_process = pipeline.apply, pipeline.process
    producer = relay.producer
    real_send, real_send_batch = producer.send, producer.send_batch

    async def apply(conn: Conn, batch: Batch) -> None:
        await real_apply(conn, batch)
        plan.reached("apply")

    async def process(records: Sequence[RecordLike]) -> None:
        await real_process(records)
        plan.reached("commit")

    async def send(*args: Any, **kwargs: Any) -> Any:
        future = await real_send(*args, **kwargs)
        if plan.point == "relay":
            await future  # this record is on the broker; its outbox row is not deleted yet
            plan.reached("relay")
        return future

    async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
        future = await real_send_batch(batch, topic, partition=partition)
        if plan.point == "relay":
            await future  # these records are on the broker; their outbox rows are not deleted yet
            for _ in range(batch.record_count()):
                plan.reached("relay")
        return future

    pipeline.apply = apply
    pipeline.process = process  # type: ignore[method-assign]
    producer.send = send
    producer.send_batch = send_batch


def create() -> FastAPI:
    """The service's ASGI app with the kill plan of the environment."""
    app = importlib.import_module(os.environ["PP_FAULT_APP"])
    settings = settings_class(app)()
    configure_logging(settings.log_format, settings.log_level)
    runtime: Runtime[Any] = app.build_runtime(settings)
    spec = os.environ.get("PP_FAULT_KILL", "")
    if spec:
        plan = KillPlan(spec)
        real_start = runtime.start

        async def start() -> None:
            await real_start()
            install(runtime, plan)

        runtime.start = start  # type: ignore[method-assign]
    return runtime.asgi()
