"""Reading the export service's stored files as it does: decrypted with the request's data key."""

from __future__ import annotations

from pathlib import Path

from services.export.at_rest import SealedStorage
from services.export.parts import KeyVault
from services.export.storage import FolderStorage


def read_stored(service_key: bytes, storage_dir: Path, sealed_data_key: bytes, key: str) -> bytes:
    """The plaintext of one stored object (`requests.data_key` is `sealed_data_key`)."""
    data_key = KeyVault(service_key).open(sealed_data_key)
    with SealedStorage(FolderStorage(storage_dir), data_key).reader(key) as stream:
        return stream.read()
