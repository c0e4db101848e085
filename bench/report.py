"""Result rows and their rendering: a Markdown table (printed and saved) and JSON."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import ratio

COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Target:
    """`value op bound`, and optionally `figure / baseline >= min_ratio`."""

    op: str
    bound: float
    min_ratio: float | None = None

    def met(self, value: float | None, to_baseline: float | None) -> bool | None:
        """True/False when it can be judged; None when the figure is missing."""
        if value is None:
            return None
        ok = COMPARE[self.op](value, self.bound)
        if self.min_ratio is not None:
            ok = ok and to_baseline is not None and to_baseline >= self.min_ratio
        return ok

    def text(self, unit: str) -> str:
        """E.g. `>= 20,000 events/s and >= 50% of baseline`."""
        words = f"{self.op} {number(self.bound)} {unit}".strip()
        if self.min_ratio is not None:
            words += f", >= {self.min_ratio:.0%} of baseline"
        return words


@dataclass
class Row:
    """One figure of one scenario, next to its same-run baseline."""

    scenario: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_what: str = ""
    target: Target | None = None
    workload: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return ratio(self.value, self.baseline)

    @property
    def met(self) -> bool | None:
        return self.target.met(self.value, self.ratio) if self.target else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the derived ratio, target text and verdict."""
        data = asdict(self)
        data["target"] = self.target.text(self.unit) if self.target else None
        data["ratio"] = self.ratio
        data["met"] = self.met
        return data


def number(value: float | None) -> str:
    """Human figures: thousands separators; three significant digits below 100."""
    if value is None:
        return "-"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


def markdown(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """The results as a Markdown document: a header with the machine, then one table."""
    lines = [
        "# Privacy Plane benchmark",
        "",
        " · ".join(f"{key}: {value}" for key, value in meta.items()),
        "",
        "| scenario | figure | value | baseline (same run) | ratio | target | verdict "
        "| workload / notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = f"{number(row.baseline)} {row.unit}" if row.baseline is not None else "-"
        if row.baseline_what:
            base += f" ({row.baseline_what})"
        notes = "; ".join(part for part in (row.workload, row.note) if part)
        cells = [
            row.scenario,
            row.figure,
            f"{number(row.value)} {row.unit}".strip(),
            base,
            f"{row.ratio:.2f}x" if row.ratio is not None else "-",
            row.target.text(row.unit) if row.target else "-",
            verdict(row.met),
            notes,
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write(folder: Path, rows: Sequence[Row], meta: dict[str, Any], stamp: str) -> list[Path]:
    """Save `results-<stamp>.md/.json` and `latest.md/.json` under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, meta)
    body = json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2, default=str)
    written = []
    for name in (f"results-{stamp}", "latest"):
        for suffix, content in ((".md", text), (".json", body)):
            path = folder / f"{name}{suffix}"
            path.write_text(content)
            written.append(path)
    return written
