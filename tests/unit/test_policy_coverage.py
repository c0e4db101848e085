"""docs/policy-coverage.md names only tests that exist: each `path::function` is collected."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COVERAGE = ROOT / "docs" / "policy-coverage.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def named_tests() -> dict[str, list[tuple[str, str]]]:
    """Per clause (the table's first cell), the tests its row names."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in COVERAGE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("Clause", "") or set(cells[0]) <= {"-"}:
            continue
        rows[cells[0]] = NAMED.findall(cells[2])
    return rows


def test_every_clause_row_names_at_least_one_unit_and_one_integration_test():
    rows = named_tests()
    assert rows
    for clause, tests in rows.items():
        paths = [path for path, _ in tests]
        assert any(p.startswith("tests/unit/") for p in paths), clause
        assert any(p.startswith("tests/integration/") for p in paths), clause


def test_every_test_the_coverage_table_names_exists():
    for clause, tests in named_tests().items():
        for path, name in tests:
            assert (ROOT / path).is_file(), f"{clause}: no file {path}"
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            found = getattr(module, name, None)
            assert found is not None, f"{clause}: {path} has no {name}"
            assert inspect.isfunction(found), f"{clause}: {path}::{name} is not a test function"
