"""Encryption at rest of export files (services/export/at_rest.py): round trip, and what fails."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from services.export.at_rest import CHUNK, NotReadable, SealedStorage, new_data_key
from services.export.storage import FolderStorage


def sealed(tmp_path: Path, key: bytes | None = None) -> SealedStorage:
    return SealedStorage(FolderStorage(tmp_path), key or bytes(range(32)))


def test_what_is_written_reads_back_line_by_line_across_chunks_and_is_not_on_disk(
    tmp_path: Path,
):
    lines = [f'{{"n": {i}, "note": "distinctive-{i}"}}\n'.encode() for i in range(20_000)]
    with sealed(tmp_path).writer("parts/a.jsonl") as out:
        for line in lines:
            out.write(line)
    raw = (tmp_path / "parts" / "a.jsonl").read_bytes()
    assert len(raw) > 2 * CHUNK
    assert b"distinctive-" not in raw
    with sealed(tmp_path).reader("parts/a.jsonl") as stream:
        assert list(stream) == lines


def test_an_empty_object_round_trips(tmp_path: Path):
    with sealed(tmp_path).writer("x"):
        pass
    with sealed(tmp_path).reader("x") as stream:
        assert stream.read() == b""


def test_a_zip_streamed_through_it_is_a_valid_zip(tmp_path: Path):
    with sealed(tmp_path).writer("b.zip") as raw, zipfile.ZipFile(raw, "w") as archive:
        with archive.open("data.json", "w", force_zip64=True) as entry:
            entry.write(os.urandom(3 * CHUNK))
        archive.writestr("manifest.json", b"{}")
    with sealed(tmp_path).reader("b.zip") as stream:
        content = stream.read()
    assert zipfile.ZipFile(io.BytesIO(content)).read("manifest.json") == b"{}"


def test_another_key_a_truncated_file_or_a_plain_file_do_not_read(tmp_path: Path):
    with sealed(tmp_path).writer("a") as out:
        out.write(os.urandom(CHUNK + 10))
    with pytest.raises(NotReadable), sealed(tmp_path, new_data_key()).reader("a") as s:
        s.read()
    path = tmp_path / "a"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(NotReadable), sealed(tmp_path).reader("a") as s:
        s.read()
    path.write_bytes(b'[{"plain": true}]')
    with pytest.raises(NotReadable), sealed(tmp_path).reader("a") as s:
        s.read()


def test_a_file_cut_at_a_chunk_boundary_is_refused_not_read_short(tmp_path: Path):
    with sealed(tmp_path).writer("a") as out:
        out.write(b"x" * (2 * CHUNK))
    raw = (tmp_path / "a").read_bytes()
    first_chunk_end = 4 + 24 + 4 + CHUNK + 17
    (tmp_path / "a").write_bytes(raw[:first_chunk_end])
    with pytest.raises(NotReadable, match="truncated"), sealed(tmp_path).reader("a") as s:
        s.read()
