"""Cursors and the CLI following them: every page, each item once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import HTTPException
from typer.testing import CliRunner

from shared.cli import app, common
from shared.plumbing.paging import decode_cursor, encode_cursor, split_page


def test_a_cursor_carries_its_sort_key_back_and_anything_else_is_refused() -> None:
    at = datetime(2026, 11, 26, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    cursor = encode_cursor(at, "job_1")
    assert decode_cursor(cursor, datetime, str) == (at, "job_1")
    assert decode_cursor(encode_cursor(42), int) == (42,)
    forged = [
        ("", (datetime, str)),
        ("!!", (datetime, str)),
        (encode_cursor(42), (datetime, str)),  # another endpoint's cursor
        (encode_cursor("x", "y"), (datetime, str)),  # not a date-time
        (encode_cursor("2026-11-26T10:00:00", "j"), (datetime, str)),  # naive
        (encode_cursor(True), (int,)),
        (encode_cursor("7"), (int,)),
    ]
    for cursor, kinds in forged:
        with pytest.raises(HTTPException) as refused:
            decode_cursor(cursor, *kinds)
        assert refused.value.status_code == 422, cursor


def test_split_page_tells_whether_more_follow() -> None:
    assert split_page([1, 2, 3], 2) == ([1, 2], True)
    assert split_page([1, 2], 2) == ([1, 2], False)


def fake_api(pages: dict[str, list[dict[str, Any]]], asked: list[tuple[str, Any]]) -> Any:
    def api(service: str, path: str, **params: Any) -> Any:
        asked.append((path, params.get("after")))
        assert params["limit"] == common.PAGE_SIZE
        index = int(params["after"] or 0)
        return pages[path][index]

    return api


def test_dry_run_and_overdue_follow_the_cursor_to_the_last_page(monkeypatch) -> None:
    at = datetime(2027, 1, 1, tzinfo=UTC).isoformat()

    def dry(n: int, subjects: list[str], count: int, nxt: str | None) -> dict[str, Any]:
        timers = [{"subject_id": s} for s in subjects]
        counts = [{"category": "usage_data", "action": "delete", "reason": "r", "count": count}]
        return {
            "at": at,
            "subjects": len(set(subjects)),
            "counts": counts,
            "timers": timers,
            "next": nxt,
        }

    pages: dict[str, list[dict[str, Any]]] = {
        "/v1/retention/dry-run": [
            dry(0, ["usr_a", "usr_b"], 2, "1"),
            dry(1, ["usr_b", "usr_c"], 2, "2"),
            dry(2, ["usr_d"], 1, None),
        ],
        "/v1/jobs": [
            {"jobs": [{"job_id": "job_1"}], "next": "1"},
            {"jobs": [{"job_id": "job_2"}], "next": None},
        ],
        "/v1/requests": [
            {
                "requests": [
                    {
                        "request_id": "req_1",
                        "subject_id": "s",
                        "kind": "erasure",
                        "status": "pending",
                        "deadline": "d",
                        "overdue": True,
                    }
                ],
                "next": None,
            },
        ],
    }
    asked: list[tuple[str, Any]] = []
    monkeypatch.setattr(common, "api", fake_api(pages, asked))
    runner = CliRunner()
    result = runner.invoke(app, ["dry-run", "--at", "2027-01-01"])
    assert result.exit_code == 0, result.output
    assert '"subjects": 4' in result.output
    assert '"count": 5' in result.output
    assert [a for p, a in asked if p == "/v1/retention/dry-run"] == [None, "1", "2"]
    result = runner.invoke(app, ["overdue"])
    assert result.exit_code == 0, result.output
    assert "2 overdue job(s), 1 request(s) due within 7 days" in result.output
