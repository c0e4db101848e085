"""No part an owner sends can stall the export consumer.

A bad exchange file (a name too long, denied, a symlink loop, a FIFO, content that cannot be
read, a file changing while read) arrives in one batch between good parts: the good ones are
stored, the bad one is a failed part with its reason, nothing is retried or dead-lettered.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.export import parts
from tests.db.export.test_apply import Fed, _fed, requested
from tests.integration.export.harness import (
    inline_parts,
    part_event,
    records_for,
    reference_part,
    settings_for,
)

pytestmark = pytest.mark.db

BadFile = Callable[[Path, pytest.MonkeyPatch], tuple[str, str]]
"""Makes a bad exchange file (or none) and returns (its location, the sha256 it claims)."""


def _written(path: Path, content: bytes) -> tuple[str, str]:
    path.write_bytes(content)
    return path.as_uri(), hashlib.sha256(content).hexdigest()


def name_too_long(exchange: Path, _: pytest.MonkeyPatch) -> tuple[str, str]:
    # Python 3.11's Path.exists() raises ENAMETOOLONG here (3.12 returns False)
    return (exchange / ("a" * 300 + ".json")).as_uri(), "0" * 64


def denied(exchange: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    # the tests run as root, which no permission bits stop: the file system is made to refuse
    location, digest = _written(exchange / "denied.json", b"[]")
    refused = str(exchange / "denied.json")
    real_stat, real_open = os.stat, os.open

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), refused)
        return real_stat(path, *args, **kwargs)

    def open_(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), refused)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "open", open_)
    return location, digest


def symlink_loop(exchange: Path, _: pytest.MonkeyPatch) -> tuple[str, str]:
    (exchange / "loop.json").symlink_to(exchange / "loop.json")
    return (exchange / "loop.json").as_uri(), "0" * 64


def nul_byte(exchange: Path, _: pytest.MonkeyPatch) -> tuple[str, str]:
    return f"{exchange.as_uri()}/a%00b.json", "0" * 64


def fifo(exchange: Path, _: pytest.MonkeyPatch) -> tuple[str, str]:
    os.mkfifo(exchange / "pipe.json")  # opening it to read would wait for a writer
    return (exchange / "pipe.json").as_uri(), "0" * 64


def under_a_file(exchange: Path, _: pytest.MonkeyPatch) -> tuple[str, str]:
    (exchange / "plain.json").write_bytes(b"[]")
    return f"{(exchange / 'plain.json').as_uri()}/part.json", "0" * 64


def nested_too_deep(exchange: Path, _: pytest.MonkeyPatch) -> tuple[str, str]:
    return _written(exchange / "deep.json", b'[{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]")


def too_many_digits(exchange: Path, _: pytest.MonkeyPatch) -> tuple[str, str]:
    return _written(exchange / "digits.json", b'[{"n": ' + b"7" * 5000 + b"}]")


def grows_while_read(exchange: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    path = exchange / "growing.json"
    location, digest = _written(path, b'[{"a": 1}, {"a": 2}]')
    real = parts.iter_array
    appended = threading.Event()

    def iter_array(stream: Any, hasher: Any) -> Iterator[dict[str, Any]]:
        for record in real(stream, hasher):
            yield record
            if not appended.is_set():  # the owner's export job is still writing
                appended.set()
                with path.open("ab") as more:
                    more.write(b"    ")

    monkeypatch.setattr(parts, "iter_array", iter_array)
    return location, digest


@pytest.mark.parametrize(
    ("bad_file", "reason"),
    [
        (name_too_long, "location cannot be read: File name too long"),
        (denied, "location cannot be read: Permission denied"),
        (symlink_loop, "location cannot be resolved: Symlink loop"),
        (nul_byte, "location cannot be resolved: embedded null byte"),
        (fifo, "location is not a regular file"),
        (under_a_file, "location cannot be read: Not a directory"),
        (nested_too_deep, "holds a record that cannot be read: maximum recursion depth"),
        (too_many_digits, "holds a record that cannot be read: Exceeds the limit"),
        (grows_while_read, "referenced part changed while it was read (20 bytes when opened"),
    ],
)
async def test_a_bad_exchange_file_fails_its_part_while_the_parts_around_it_are_stored(
    fed: Fed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_file: BadFile, reason: str
):
    await fed.feed(requested(fed.clock))
    jobs = await fed.jobs()
    exchange = tmp_path / "exchange"
    before = inline_parts(jobs["crm"], "crm_data", records_for("crm", "crm_data", 2))
    after = reference_part(
        jobs["billing"], "billing_records", records_for("billing", "x", 3), exchange
    )
    location, digest = bad_file(exchange, monkeypatch)
    bad = part_event(jobs["support"], "support_communications", 0, 1, sha256=digest,
                     location=location)  # fmt: skip

    await fed.feed(*before, bad, after)  # one batch: it must commit, not retry

    rows = await fed.pool.fetch("SELECT owner, status, record_count, error FROM parts")
    found = {r["owner"]: (r["status"], r["record_count"], r["error"]) for r in rows}
    assert found["crm"] == ("stored", 2, None)
    assert found["billing"] == ("stored", 3, None)
    status, _, error = found["support"]
    assert status == "failed"
    assert reason in error
    assert await fed.dead() == []


@pytest.fixture
async def fed(infra: Any, topics: Any, schema: str, tmp_path: Path) -> AsyncIterator[Fed]:
    async with _fed(settings_for(infra, topics, schema, tmp_path)) as fed:
        yield fed
