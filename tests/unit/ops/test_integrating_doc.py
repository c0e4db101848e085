"""docs/integrating.md shows the examples the interop tests run, as they are in their files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "integrating.md"
MARKED = [
    (ROOT / "docs" / "examples" / "python_sdk1.py", "#"),
    (ROOT / "docs" / "examples" / "python_sdk2.py", "#"),
    (ROOT / "tests" / "integration" / "interop" / "java" / "Interop.java", "//"),
]


def regions(path: Path, comment: str) -> dict[str, str]:
    """The parts of `path` between `<comment> doc:begin NAME` and `<comment> doc:end`."""
    marker = re.escape(comment)
    pattern = rf"^[ \t]*{marker} doc:begin (\S+)\n(.*?)^[ \t]*{marker} doc:end\n"
    found = re.finditer(pattern, path.read_text(), re.S | re.M)
    return {m.group(1): m.group(2).strip("\n") for m in found}


@pytest.mark.parametrize(("path", "comment"), MARKED, ids=[p.name for p, _ in MARKED])
def test_the_page_shows_each_marked_example_verbatim(path, comment):
    shown = regions(path, comment)
    assert len(shown) == 2  # publishing and reading
    text = DOC.read_text()
    for name, code in shown.items():
        assert f"\n{code}\n```" in text, f"{path.name}: {name} differs from docs/integrating.md"


def test_the_page_shows_the_command_line_event_and_the_command_the_test_runs():
    text = DOC.read_text()
    event = (ROOT / "docs" / "examples" / "consent-granted.json").read_text().strip("\n")
    assert f"```json\n{event}\n```" in text
    assert '```sh\nkcat -P -b "$KAFKA_BOOTSTRAP_SERVERS" -t consent.changes -k usr_42' in text
    assert "content-type=application/cloudevents+json; charset=UTF-8" in text
