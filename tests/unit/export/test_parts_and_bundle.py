"""Receiving parts into storage, writing the zip, and signing links (files in a tmp folder)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nacl.exceptions import CryptoError

from services.export import links, parts
from services.export.bundle import BundleInput, write_bundle
from services.export.domain import Settled
from services.export.part_store import StoredPart
from services.export.parts import KeyVault, PartError
from services.export.storage import FolderStorage, part_key
from shared.contract.sealing import new_keypair, records_bytes, seal_records

RECORDS = [{"id": 1, "name": "Ada"}, {"id": 2, "name": "Grace", "tags": ["a", "]"]}]


def lines(storage: FolderStorage, key: str) -> list[dict[str, object]]:
    with storage.reader(key) as stream:
        return [json.loads(line) for line in stream]


def test_the_private_key_at_rest_opens_only_with_the_service_key():
    private, _ = new_keypair()
    sealed = KeyVault(bytes(32)).seal(private)
    assert private not in sealed
    assert KeyVault(bytes(32)).open(sealed) == private
    with pytest.raises(CryptoError):
        KeyVault(bytes([1]) * 32).open(sealed)


def test_an_inline_part_is_opened_verified_and_kept_as_json_lines(tmp_path: Path):
    storage = FolderStorage(tmp_path)
    private, public = new_keypair()
    sealed, digest = seal_records(public, RECORDS)
    assert parts.store_inline(storage, "p/0.jsonl", private, sealed, digest, 2) == 2
    assert lines(storage, "p/0.jsonl") == RECORDS


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"digest": "0" * 64}, "sha256 mismatch"),
        ({"count": 3}, "record_count says 3"),
        ({"key": "other"}, "cannot be opened"),
    ],
)
def test_a_bad_inline_part_fails_with_a_reason_and_leaves_no_file(tmp_path: Path, tamper, reason):
    storage = FolderStorage(tmp_path)
    private, public = new_keypair()
    sealed, digest = seal_records(public, RECORDS)
    key = new_keypair()[0] if tamper.get("key") else private
    with pytest.raises(PartError, match=reason):
        parts.store_inline(
            storage, "p/0.jsonl", key, sealed, tamper.get("digest", digest), tamper.get("count")
        )
    assert not storage.exists("p/0.jsonl")


def test_a_referenced_part_is_streamed_in_and_its_sha256_verified(tmp_path: Path):
    storage = FolderStorage(tmp_path / "store")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    plaintext = records_bytes(RECORDS)
    (exchange / "part.json").write_bytes(plaintext)
    digest = hashlib.sha256(plaintext).hexdigest()
    location = (exchange / "part.json").as_uri()
    count = parts.store_reference(storage, "p/0.jsonl", exchange, location, digest, None)
    assert count == 2
    assert lines(storage, "p/0.jsonl") == RECORDS
    with pytest.raises(PartError, match="sha256 mismatch"):
        parts.store_reference(storage, "p/1.jsonl", exchange, location, "f" * 64, None)
    assert not storage.exists("p/1.jsonl")


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("https://example.com/part.json", "only file://"),
        ("s3://bucket/part.json", "only file://"),
        ("file://otherhost/x/part.json", "no host"),
        ("file:///etc/passwd", "outside the exchange folder"),
        ("EXCHANGE/../secret.json", "outside the exchange folder"),
        ("EXCHANGE/missing.json", "cannot be read"),
        ("EXCHANGE/", "not a regular file"),
    ],
)
def test_a_location_outside_the_exchange_folder_or_not_file_is_refused(
    tmp_path: Path, location: str, reason: str
):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    (tmp_path / "secret.json").write_text("[]")
    location = location.replace("EXCHANGE", f"file://{exchange}")
    storage = FolderStorage(tmp_path / "store")
    with pytest.raises(PartError, match=reason):
        parts.store_reference(storage, "p/0.jsonl", exchange, location, "0" * 64, None)


@pytest.mark.parametrize(
    "content",
    [b"[]", b'[{"a": 1}]', b' [\n{"a": "\xc3\xa9"} ,{"b": [1, {"c": "]"}]}\n]\n'],
)
def test_the_array_reader_yields_every_object_across_chunk_boundaries(content, monkeypatch):
    monkeypatch.setattr(parts, "CHUNK", 3)
    hasher = hashlib.sha256()
    assert list(parts.iter_array(io.BytesIO(content), hasher)) == json.loads(content)
    assert hasher.hexdigest() == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize(
    "content", [b'{"a": 1}', b"[1, 2]", b'[{"a": 1},]', b'[{"a": 1}', b'[{"a": 1}] []', b"\xff"]
)
def test_the_array_reader_refuses_anything_but_an_array_of_objects(content):
    with pytest.raises(PartError):
        list(parts.iter_array(io.BytesIO(content), hashlib.sha256()))


def test_a_bundle_streams_parts_into_one_file_per_category_with_a_manifest(tmp_path: Path):
    storage = FolderStorage(tmp_path)
    first, second = RECORDS[:1], RECORDS[1:]
    for index, chunk in enumerate((first, second)):
        with storage.writer(part_key("k", "crm", "crm_data", index)) as out:
            out.writelines(json.dumps(r).encode() + b"\n" for r in chunk)
    stored = [
        StoredPart("crm", "crm_data", 0, 1, "a" * 64, "https://crm.example/contact.json"),
        StoredPart("crm", "crm_data", 1, 1, "b" * 64, None),
    ]
    settled = [
        Settled(owner="crm", category="crm_data", outcome="exported"),
        Settled(owner="support", category="support_communications", outcome="missing"),
    ]
    now = datetime(2026, 11, 26, tzinfo=UTC)
    bundle = BundleInput("req_1", "usr_1", "k", now, "partially_completed", stored, settled, {})
    manifest = write_bundle(storage, "bundles/b.zip", bundle)
    with storage.reader("bundles/b.zip") as stream:
        archive = zipfile.ZipFile(io.BytesIO(stream.read()))
    assert json.loads(archive.read("manifest.json")) == manifest
    [entry] = manifest["files"]
    content = archive.read(entry["path"])
    assert json.loads(content) == RECORDS
    assert entry["sha256"] == hashlib.sha256(content).hexdigest()
    assert entry["record_count"] == 2
    assert entry["schema"] == "https://crm.example/contact.json"
    assert [p["sha256"] for p in entry["parts"]] == ["a" * 64, "b" * 64]
    assert manifest["not_included"][0]["owner"] == "support"
    assert "information.json" in archive.namelist()


def test_a_write_killed_midway_leaves_nothing_once_its_object_is_written_again_or_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    storage = FolderStorage(tmp_path)

    def half_write(key: str) -> None:
        with storage.writer(key) as out:
            out.write(b"PK half a zip of personal data")
            raise KeyboardInterrupt

    def killed(key: str) -> None:
        """A writer whose process died mid-write: its temporary file stays behind."""
        with monkeypatch.context() as patch:
            patch.setattr("os.unlink", lambda _: None)  # SIGKILL runs no clean-up
            with pytest.raises(KeyboardInterrupt):
                half_write(key)

    killed("bundles/b.zip")
    killed("bundles/other.zip")
    assert len(list((tmp_path / "bundles").iterdir())) == 2
    bundle = BundleInput("req_1", "usr_1", "k", datetime.now(UTC), "completed", [], [], {})
    write_bundle(storage, "bundles/b.zip", bundle)  # the retried assembly
    other, written = sorted(p.name for p in (tmp_path / "bundles").iterdir())
    assert written == "b.zip"
    assert other.startswith(".tmp-other.zip.")  # another object's write is not touched
    storage.delete("bundles/other.zip")  # the bundle cleaner, the cancellation
    assert [p.name for p in (tmp_path / "bundles").iterdir()] == ["b.zip"]


def test_a_link_signature_covers_request_bundle_and_expiry():
    sig = links.signature(b"secret", "req_1", "bundle_1", 100)
    assert links.valid(b"secret", "req_1", "bundle_1", 100, sig)
    assert not links.valid(b"secret", "req_2", "bundle_1", 100, sig)
    assert not links.valid(b"secret", "req_1", "bundle_2", 100, sig)
    assert not links.valid(b"secret", "req_1", "bundle_1", 101, sig)
    assert not links.valid(b"other", "req_1", "bundle_1", 100, sig)
    assert links.download_path(b"secret", "req_1", "bundle_1", 100).endswith(f"sig={sig}")


def test_storage_keys_cannot_escape_the_folder(tmp_path: Path):
    storage = FolderStorage(tmp_path)
    with pytest.raises(ValueError, match="bad storage key"):
        storage.exists("../outside")
    with pytest.raises(ValueError, match="bad storage key"):
        storage.exists("/etc/passwd")


def test_a_referenced_record_json_cannot_hold_fails_the_part_instead_of_the_consumer(
    tmp_path: Path,
):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    content = b'[{"id": 123456789012345678901234567890}]'
    (exchange / "big.json").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    location = (exchange / "big.json").as_uri()
    with pytest.raises(PartError, match="cannot be kept as JSON"):
        parts.store_reference(
            FolderStorage(tmp_path), "p/0.jsonl", exchange, location, digest, None
        )


def test_the_owner_helper_seals_a_whole_answer_into_numbered_parts_the_service_opens(
    tmp_path: Path,
):
    from datetime import UTC, datetime

    from shared.contract.events import ExportJobData
    from shared.contract.sealing import sealed_parts

    private, public = new_keypair()
    job = ExportJobData(job_id="j", request_id="r", owner="crm", categories=["crm_data"],
                        due_by=datetime(2026, 12, 1, tzinfo=UTC), public_key=public)  # fmt: skip
    records = [{"id": i, "text": "x" * 100} for i in range(50)]
    answer = sealed_parts(job, "crm_data", records, max_bytes=1024)
    assert len(answer) > 1
    assert {p.part_count for p in answer} == {len(answer)}
    assert [p.part_index for p in answer] == list(range(len(answer)))
    storage = FolderStorage(tmp_path)
    kept = []
    for part in answer:
        assert part.sealed is not None
        key = f"p/{part.part_index}.jsonl"
        parts.store_inline(storage, key, private, part.sealed, part.sha256, part.record_count)
        kept.extend(lines(storage, key))
    assert kept == records
    [empty] = sealed_parts(job, "crm_data", [])
    assert (empty.part_count, empty.record_count) == (1, 0)


def test_a_referenced_part_over_the_size_limit_fails_with_the_limit_named(tmp_path: Path):
    storage = FolderStorage(tmp_path / "store")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    plaintext = records_bytes(RECORDS)
    (exchange / "part.json").write_bytes(plaintext)
    digest = hashlib.sha256(plaintext).hexdigest()
    location = (exchange / "part.json").as_uri()
    limit = len(plaintext) - 1
    with pytest.raises(PartError, match=f"over the size limit of {limit}"):
        parts.store_reference(storage, "p/0.jsonl", exchange, location, digest, None, limit)
    assert not storage.exists("p/0.jsonl")
    exact = parts.store_reference(
        storage, "p/1.jsonl", exchange, location, digest, None, len(plaintext)
    )
    assert exact == 2


def test_a_referenced_part_that_grows_while_read_is_stopped_at_the_limit(tmp_path: Path):
    hasher = parts._LimitedHasher(10)
    hasher.update(b"0123456789")
    with pytest.raises(PartError, match="over the size limit"):
        hasher.update(b"x")
