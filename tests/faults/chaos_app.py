"""Run any service's runtime with a planned SIGKILL at a precise point of its work.

`python -m shared.plumbing.serve tests.faults.chaos_app:create` with
- `PP_FAULT_APP`: the service's app module (`services.consent.app`, `tests.faults.toy_app`),
  which has `build_runtime(settings, clock=None)`; its settings class is the
  `ServiceSettings` subclass in `<package>.settings` (or in the app module itself);
- `PP_FAULT_KILL`: `<point>:<n>` — the process kills itself with SIGKILL at the n-th time it
  reaches `point`:
  - `apply`: inside the database transaction, after the handler ran, before the commit;
  - `commit`: after the transaction committed, before the Kafka offsets are committed;
  - `relay`: after Kafka accepted a batch of the outbox relay, before its rows are deleted
    (counted per record; the production relay's `after_send` seam);
  - `fire`: retention, inside a batch of due timers' transaction, before the commit;
  - `expire`: consent, inside an expiry round's transaction (grants lapsed), before the commit;
  - `zip`: export, mid-zip (after a file of the bundle, before the zip is complete);
  - `bundle`: export, the zip written and the request finished, before that commit;
  - `clean`: export, expired bundles' files deleted, before the transaction commits.
  The last five are the test seams of `shared.plumbing.seams` in the services' own code.
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

    def reached(self, point: str, times: int = 1) -> None:
        if point != self.point:
            return
        self.remaining -= times
        if self.remaining <= 0:
            os.write(2, f"{KILL_MARK} point={point}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)


SEAMS: dict[str, tuple[str, str]] = {
    "fire": ("services.retention.loops", "after_fire"),
    "expire": ("services.consent.loops", "after_expire"),
    "zip": ("services.export.bundle", "mid_zip"),
    "bundle": ("services.export.loops", "after_bundle"),
    "clean": ("services.export.loops", "after_bundles_deleted"),
}
"""Kill points in the services' own code: point -> (module, seam attribute)."""


def install_seam(plan: KillPlan) -> None:
    """Set the production seam of `plan.point` (if it is one) to count and kill there."""
    if plan.point not in SEAMS:
        return
    module, attribute = SEAMS[plan.point]
    point = plan.point

    async def reached() -> None:
        plan.reached(point)

    def reached_sync() -> None:  # in the export's zip-writing thread: SIGKILL ends every thread
        plan.reached(point)

    hook: Any = reached_sync if point == "zip" else reached
    setattr(importlib.import_module(module), attribute, hook)


def install(runtime: Runtime[Any], plan: KillPlan) -> None:
    """Wrap the pipeline and set the relay's seam so that `plan` sees each point."""
    pipeline, relay = runtime.pipeline, runtime.relay
    assert pipeline is not None
    assert relay is not None
    real_apply, real_process = pipeline.apply, pipeline.process

    async def apply(conn: Conn, batch: Batch) -> None:
        await real_apply(conn, batch)
        plan.reached("apply")

    async def process(records: Sequence[RecordLike]) -> None:
        await real_process(records)
        plan.reached("commit")

    async def sent(count: int) -> None:
        plan.reached("relay", count)

    pipeline.apply = apply
    pipeline.process = process  # type: ignore[method-assign]
    relay.after_send = sent


def create() -> FastAPI:
    """The service's ASGI app with the kill plan of the environment."""
    app = importlib.import_module(os.environ["PP_FAULT_APP"])
    settings = settings_class(app)()
    configure_logging(settings.log_format, settings.log_level)
    runtime: Runtime[Any] = app.build_runtime(settings)
    spec = os.environ.get("PP_FAULT_KILL", "")
    if spec:
        plan = KillPlan(spec)
        install_seam(plan)  # before the loops start: none of their rounds goes uncounted
        real_start = runtime.start

        async def start() -> None:
            await real_start()
            install(runtime, plan)

        runtime.start = start  # type: ignore[method-assign]
    return runtime.asgi()
