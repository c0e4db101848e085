"""`publish` measures the encoded record as the services do and refuses one over the bound."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.cli import app
from shared.cli.common import CliError, event_item
from shared.cli.publish import build_event, check_size, max_event_bytes
from shared.contract.codec import record_size
from shared.contract.envelope import MAX_EVENT_BYTES


def closed() -> dict[str, Any]:
    return {
        "type": "account.closed.v1",
        "subject": "usr_1",
        "data": {"account_id": "acc_1", "closed_at": "2026-11-26T10:00:00Z"},
    }


def test_the_record_is_measured_with_its_headers_and_refused_only_past_the_bound():
    event = build_event(closed())
    item = event_item("accounts.lifecycle", event)
    size = record_size(item[2], item[3])
    assert size > len(item[2] or b"")  # the content-type header counts
    check_size(item, event, size)
    with pytest.raises(CliError) as refused:
        check_size(item, event, size - 1)
    assert str(refused.value) == (
        f"account.closed.v1 id={event.id}: the encoded event is {size} bytes (value and "
        f"headers), over the limit of {size - 1} (MAX_EVENT_BYTES); nothing was sent"
    )


def test_the_bound_is_the_services_default_unless_the_operator_gives_theirs(monkeypatch):
    monkeypatch.delenv("PP_MAX_EVENT_BYTES", raising=False)
    monkeypatch.delenv("MAX_EVENT_BYTES", raising=False)
    assert max_event_bytes() == MAX_EVENT_BYTES
    monkeypatch.setenv("PP_MAX_EVENT_BYTES", "2048")
    assert max_event_bytes() == 2048
    monkeypatch.setenv("PP_MAX_EVENT_BYTES", "half a meg")
    with pytest.raises(CliError, match="PP_MAX_EVENT_BYTES must be a number of bytes"):
        max_event_bytes()


def test_an_oversize_event_is_refused_before_kafka_is_reached(monkeypatch, tmp_path):
    # nothing listens on port 9: reaching for the broker would fail with exit 3 instead
    monkeypatch.setenv("PP_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("PP_MAX_EVENT_BYTES", "1024")
    event = closed()
    event["data"]["note"] = "n" * 2000  # an unknown field, well within its own 16 KiB
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    result = CliRunner().invoke(app, ["publish", str(path)])
    assert result.exit_code == 2, result.output
    assert "over the limit of 1024 (MAX_EVENT_BYTES)" in " ".join(result.output.split())
