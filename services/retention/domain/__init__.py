"""Pure retention decisions: schedules, erasure outcomes, what falls due, request status.

No I/O and no clock: `now` is always a parameter. The timer loop, the event handlers and the
dry run all decide through these modules, so the dry run answers exactly what happens.
"""

from services.retention.domain import (
    certificates,
    dry_run,
    erasure,
    jobs,
    model,
    requests,
    restriction,
    rolling,
    rules,
)

__all__ = [
    "certificates",
    "dry_run",
    "erasure",
    "jobs",
    "model",
    "requests",
    "restriction",
    "rolling",
    "rules",
]
