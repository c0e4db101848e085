"""Opt-in profiles of service processes (BENCH_PROFILE=1): py-spy attached, top entries.

py-spy (`pip install py-spy`) samples the process from outside, so the service runs unchanged.
Its `raw` output is one collapsed stack per line (`frame;frame;… count`); `top` turns it into
the hottest functions by own time and by inclusive time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    frame: str
    own: float
    inclusive: float


def parse(collapsed: str) -> list[tuple[list[str], int]]:
    """(stack, samples) per line of py-spy's raw/collapsed format."""
    stacks = []
    for line in collapsed.splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    """`fn (path/to/pkg/file.py:12)` → `fn (pkg/file.py)`: one entry per function."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    path = Path(where.rstrip(")").rpartition(":")[0])
    return f"{name} ({path.parent.name}/{path.name})" if path.parent.name else f"{name} ({path})"


def top(collapsed: str, limit: int = 15, skip_idle: bool = True, by: str = "own") -> list[Entry]:
    """The hottest functions by own samples (`by="own"`) or, among the project's own
    functions, by inclusive samples (`by="project"`); shares are of the busy samples."""
    stacks = parse(collapsed)
    if skip_idle:
        stacks = [(s, n) for s, n in stacks if not _idle(s)]
    total = sum(n for _, n in stacks)
    if not total:
        return []
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks:
        frames = [short(f) for f in stack]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if by == "project":
        ranked = Counter(
            {f: n for f, n in inclusive.items() if any(p in f"/{f}" for p in _project_dirs())}
        )
    else:
        ranked = own
    return [
        Entry(frame, own[frame] / total, inclusive[frame] / total)
        for frame, _ in ranked.most_common(limit)
    ]


def _project_dirs() -> tuple[str, ...]:
    """Folder names the short frames keep (`consent/handlers.py`): the project's packages."""
    root = Path(__file__).resolve().parents[1]
    names = {
        d.name for base in ("services", "shared") for d in (root / base).iterdir() if d.is_dir()
    }
    return tuple(f"({name}/" for name in names)


def _idle(stack: list[str]) -> bool:
    """The event loop waiting: asyncio's selector, or uvloop's C loop (seen as Runner.run)."""
    if not stack:
        return False
    last = stack[-1]
    return ("selectors.py" in last and ".select (" in last) or last.startswith("Runner.run (")


class Profiler:
    """py-spy recording one process until `stop`; does nothing if py-spy is missing."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        exe = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if exe is None:
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--subprocesses",
        ]
        self.proc = subprocess.Popen(
            [*argv, "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> list[Entry]:
        """Stop recording; the top entries (empty without py-spy)."""
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if not self.out.exists():
            return []
        text = self.out.read_text()
        return top(text) + top(text, by="project")


def render(name: str, entries: list[Entry]) -> str:
    """A Markdown section with the top entries."""
    lines = [f"### {name}", "", "| own | inclusive | function |", "|---|---|---|"]
    lines += [f"| {e.own:.1%} | {e.inclusive:.1%} | `{e.frame}` |" for e in entries]
    return "\n".join(lines) + "\n"
