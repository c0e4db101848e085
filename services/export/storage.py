"""Export storage: where parts and bundles live. A folder by default; an object store fits the
same small protocol (write a key from a stream, read it back in chunks, delete a key or prefix).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from shared.plumbing.db import InfrastructureError


class Storage(Protocol):
    """Keys are relative POSIX paths (`parts/<request>/<owner>/<category>/000001.jsonl`)."""

    def writer(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A binary stream; the object appears under `key` only when the block exits cleanly."""
        ...

    def reader(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A binary stream of the object; FileNotFoundError if there is none."""
        ...

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object and whatever an interrupted write of it left (no error if absent)."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix/` (no error if absent)."""
        ...


class StorageUnavailable(InfrastructureError):
    """Our storage folder cannot be used (not writable, not mounted): retried, never the input's
    fault. Failures while writing the stream itself keep their OSError (ENOSPC, EIO)."""


@contextlib.contextmanager
def _ours(action: str, key: str) -> Iterator[None]:
    """An OSError of our own folder becomes StorageUnavailable (FileNotFoundError stays)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StorageUnavailable(f"storage cannot {action} {key!r}: {exc}") from exc


class FolderStorage:
    """Storage in a local folder; writes go to a temporary file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"bad storage key {key!r}")
        return self.root.joinpath(*relative.parts)

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        with _ours("write", key):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path))
        try:
            with os.fdopen(fd, "wb") as stream:
                yield stream
            with _ours("write", key):
                os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        with _ours("read", key):
            stream = self._path(key).open("rb")
        with stream:
            yield stream

    def exists(self, key: str) -> bool:
        with _ours("look up", key):
            return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        # a process killed mid-write leaves its temporary file: it goes with the object
        with _ours("delete", key):
            for name in (path, *path.parent.glob(glob.escape(_temp_prefix(path)) + "*")):
                with contextlib.suppress(FileNotFoundError):
                    name.unlink()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)


def _temp_prefix(path: Path) -> str:
    """Temporary files are named after their object, so that deleting it finds them."""
    return f".tmp-{path.name}."


def part_key(storage_key: str, owner: str, category: str, part_index: int) -> str:
    """Where one received part is kept (JSON Lines, one record per line)."""
    return f"parts/{storage_key}/{owner}/{category}/{part_index:06d}.jsonl"


def category_prefix(storage_key: str, owner: str, category: str) -> str:
    """Every part of one owner's category of one request."""
    return f"parts/{storage_key}/{owner}/{category}"


def parts_prefix(storage_key: str) -> str:
    """Every part of one request."""
    return f"parts/{storage_key}"


def bundle_key(bundle_id: str) -> str:
    """Where a finished bundle is kept."""
    return f"bundles/{bundle_id}.zip"
