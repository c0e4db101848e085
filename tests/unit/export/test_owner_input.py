"""The boundary between an owner's input and our own storage: what fails the part, what retries."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from services.export import parts
from services.export.parts import OwnerFile, PartError
from services.export.storage import FolderStorage, StorageUnavailable
from shared.contract.sealing import records_bytes
from shared.plumbing.db import is_transient

RECORDS = [{"id": 1}, {"id": 2}]


def exchange_file(tmp_path: Path) -> tuple[Path, str]:
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    content = records_bytes(RECORDS)
    (exchange / "part.json").write_bytes(content)
    return exchange / "part.json", hashlib.sha256(content).hexdigest()


class FailingRead(io.RawIOBase):
    """A file whose disk fails under the read (the owner's disk, not ours)."""

    def readinto(self, _: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    def readable(self) -> bool:
        return True


def test_a_read_failing_in_the_owners_file_fails_the_part_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path, digest = exchange_file(tmp_path)
    storage = FolderStorage(tmp_path / "store")
    real_open = OwnerFile.open
    real_streams: list[io.BufferedReader] = []

    def failing(path: Path, max_bytes: int) -> OwnerFile:
        owner_file = real_open(path, max_bytes)
        real_streams.append(owner_file._stream)  # the descriptor stays open for fstat
        owner_file._stream = io.BufferedReader(FailingRead())
        return owner_file

    monkeypatch.setattr(OwnerFile, "open", failing)
    with pytest.raises(PartError, match="location cannot be read: Input/output error"):
        parts.store_file(storage, "p/0.jsonl", path, digest, None)
    assert not storage.exists("p/0.jsonl")
    real_streams[0].close()


class FullDisk:
    """Our storage with its disk full: the stream's writes fail with ENOSPC."""

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        class Full(io.BytesIO):
            def write(self, _: object) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        yield Full()


def test_our_storage_failing_while_a_part_is_written_is_an_outage_not_the_parts_fault(
    tmp_path: Path,
):
    path, digest = exchange_file(tmp_path)
    with pytest.raises(OSError) as raised:
        parts.store_file(FullDisk(), "p/0.jsonl", path, digest, None)  # type: ignore[arg-type]
    assert not isinstance(raised.value, PartError)
    assert raised.value.errno == errno.ENOSPC
    assert is_transient(raised.value)


def test_a_storage_folder_we_cannot_write_is_an_outage(tmp_path: Path):
    (tmp_path / "not-a-folder").write_bytes(b"")
    storage = FolderStorage(tmp_path / "not-a-folder")
    with pytest.raises(StorageUnavailable) as raised, storage.writer("parts/x/0.jsonl"):
        pass
    assert is_transient(raised.value)
    with pytest.raises(FileNotFoundError), FolderStorage(tmp_path).reader("missing"):
        pass


def test_an_owner_file_replaced_by_a_symlink_after_the_check_is_not_followed(tmp_path: Path):
    path, _ = exchange_file(tmp_path)
    (tmp_path / "secret.json").write_bytes(b"[]")
    path.unlink()
    path.symlink_to(tmp_path / "secret.json")  # between resolve_location and the open
    with pytest.raises(PartError, match="location cannot be read: Too many levels"):
        OwnerFile.open(path, 1000)
