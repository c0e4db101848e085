"""`subject`, `overdue`, `dry-run`: the consent and retention read APIs, as tables."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from shared.cli.common import api, call, every, out, pages


def subject(subject_id: str) -> None:
    """Everything about one subject: consent, ledger, retention schedule, jobs, requests."""
    consent = call(api, "consent", f"/v1/subjects/{subject_id}/consent")
    history = call(api, "consent", f"/v1/subjects/{subject_id}/consent/history", limit=20)
    retention = call(api, "retention", f"/v1/subjects/{subject_id}/retention")
    out.rule(f"[bold]{subject_id}[/bold] — consent")
    out.print_json(json.dumps(consent, default=str))
    out.rule("ledger (latest 20)")
    out.print_json(json.dumps(history, default=str))
    out.rule("retention: schedule, holds, jobs, certificates")
    out.print_json(json.dumps(retention, default=str))


def overdue(
    days: int = typer.Option(7, help="Requests whose deadline is within this many days"),
) -> None:
    """Overdue jobs, and requests past or near their deadline."""
    jobs = call(every, "retention", "/v1/jobs", "jobs", overdue="true")
    requests = call(every, "retention", "/v1/requests", "requests", due_within_days=days)
    table = Table(
        "job", "subject", "owner", "category", "mode", "status", "due by", title="overdue jobs"
    )
    for j in jobs:
        table.add_row(
            str(j.get("job_id")), str(j.get("subject_id")), str(j.get("owner")),
            str(j.get("category")), str(j.get("mode")), str(j.get("status")), str(j.get("due_by")),
        )  # fmt: skip
    out.print(table)
    near = Table(
        "request",
        "subject",
        "kind",
        "status",
        "deadline",
        "overdue",
        title=f"requests due within {days} days",
    )
    for r in requests:
        near.add_row(
            str(r["request_id"]), str(r["subject_id"]), str(r["kind"]), str(r["status"]),
            str(r["deadline"]), "yes" if r["overdue"] else "",
        )  # fmt: skip
    out.print(near)
    out.print(f"{len(jobs)} overdue job(s), {len(requests)} request(s) due within {days} days")


def dry_run(
    at: datetime = typer.Option(..., help="The date to evaluate, e.g. 2027-03-01"),
    subject_id: str | None = typer.Option(None, "--subject", help="One subject (default: all)"),
) -> None:
    """What retention would delete or restrict on a date, and why (no side effects)."""
    when = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
    if not subject_id:
        result = call(dry_run_totals, when)
        out.print_json(json.dumps(result, default=str))
        return
    result = call(api, "retention", f"/v1/subjects/{subject_id}/retention", at=when)
    table = Table("category", "owner", "on " + when[:10], "why", "due", "held by")
    for row in result.get("dry_run", []):
        table.add_row(
            row["category"], row["owner"], row["action"], row["reason"],
            str(row.get("due_at") or ""), ", ".join(row.get("hold_ids") or []),
        )  # fmt: skip
    out.print(table)


def dry_run_totals(when: str) -> dict[str, Any]:
    """The dry run over every subject, its pages added up: subjects and counts."""
    counts: Counter[tuple[str, str, str]] = Counter()
    subjects: set[str] = set()
    at = when
    for page in pages("retention", "/v1/retention/dry-run", at=when):
        at = page["at"]
        subjects.update(t["subject_id"] for t in page["timers"])
        for c in page["counts"]:
            counts[(c["category"], c["action"], c["reason"])] += c["count"]
    return {
        "at": at,
        "subjects": len(subjects),
        "counts": [
            {"category": c, "action": a, "reason": r, "count": n}
            for (c, a, r), n in sorted(counts.items())
        ],
    }
