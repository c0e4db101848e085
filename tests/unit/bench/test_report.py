"""The bench's result table: targets, ratios and rendering."""

from __future__ import annotations

import json

from bench.report import Row, Target, markdown, number, write


def test_throughput_target_needs_both_the_bound_and_the_baseline_ratio():
    target = Target(">=", 20_000, min_ratio=0.5)
    assert target.met(25_000, 0.6) is True
    assert target.met(25_000, 0.4) is False
    assert target.met(15_000, 0.9) is False
    assert target.met(None, None) is None


def test_row_ratio_is_figure_over_baseline():
    row = Row("1 ingest", "end to end", 5_000, "events/s", baseline=20_000)
    assert row.ratio == 0.25
    assert Row("x", "y", 1.0, "ms").ratio is None


def test_numbers_are_readable():
    assert number(21_345.6) == "21,346"
    assert number(42.345) == "42.3"
    assert number(3.14159) == "3.14"
    assert number(0) == "0"
    assert number(None) == "-"


def test_markdown_table_shows_value_baseline_ratio_target_and_verdict():
    rows = [
        Row(
            "2 decisions",
            "p99 at 2,000 req/s",
            12.5,
            "ms",
            baseline=2.5,
            baseline_what="trivial | endpoint",
            target=Target("<", 10),
            workload="100,000 subjects",
        ),
        Row("6 footprint", "consent idle RSS", None, "MB", note="service missing"),
    ]
    text = markdown(rows, {"cores": 2})
    lines = text.splitlines()
    assert "cores: 2" in lines[2]
    assert lines[6] == (
        "| 2 decisions | p99 at 2,000 req/s | 12.5 ms | 2.5 ms (trivial / endpoint) | 5.00x "
        "| < 10 ms | MISSED | 100,000 subjects |"
    )
    assert lines[7].startswith("| 6 footprint | consent idle RSS | - MB | - | - | - | - |")
    assert lines[7].endswith("service missing |")


def test_write_saves_markdown_and_json_with_derived_fields(tmp_path):
    rows = [Row("6 footprint", "idle RSS", 80.0, "MB", baseline=64.0, target=Target("<", 150))]
    paths = write(tmp_path, rows, {"cores": 2}, "20261126T050000Z")
    assert sorted(p.name for p in paths) == [
        "latest.json",
        "latest.md",
        "results-20261126T050000Z.json",
        "results-20261126T050000Z.md",
    ]
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert saved["meta"] == {"cores": 2}
    assert saved["rows"][0]["ratio"] == 1.25
    assert saved["rows"][0]["met"] is True
    assert saved["rows"][0]["target"] == "< 150 MB"
