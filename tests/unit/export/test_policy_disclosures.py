"""Policy 3.2: disclosures to authorities, on a kept topic without personal fields, told in the
access file except while secrecy is ordered."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.export.bundle import BundleInput, write_bundle
from services.export.disclosures import Disclosure, told
from services.export.storage import FolderStorage
from services.retention.disclosures import withheld
from shared.contract.events import EVENT_TYPES, DisclosureRecordedData, personal_fields
from shared.contract.topics import TOPIC_OF_TYPE, Topics

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def disclosure(reference: str, secret_until: datetime | None = None) -> Disclosure:
    return Disclosure(
        authority="Staatsanwaltschaft Berlin",
        authority_kind="law_enforcement",
        legal_basis="§ 100g StPO",
        reference=reference,
        categories=["usage_data"],
        disclosed_at=NOW - DAY,
        secret_until=secret_until,
    )


def test_disclosures_travel_on_the_kept_holds_topic_whose_types_carry_no_personal_field():
    assert Topics().for_type("disclosure.recorded.v1") in Topics().kept()
    on_holds = [t for t, topic in TOPIC_OF_TYPE.items() if topic == "legal_holds"]
    assert "disclosure.recorded.v1" in on_holds
    for event_type in on_holds:
        data = EVENT_TYPES[event_type].model_fields["data"].annotation
        assert isinstance(data, type)
        assert personal_fields(data) == set(), event_type
    assert personal_fields(DisclosureRecordedData) == set()


def test_a_secret_disclosure_is_withheld_until_its_date_and_then_told():
    open_one, secret = disclosure("AZ 1"), disclosure("AZ 2", secret_until=NOW + DAY)
    assert [d["reference"] for d in told([open_one, secret], NOW)] == ["AZ 1"]
    assert [d["reference"] for d in told([open_one, secret], NOW + DAY)] == ["AZ 1", "AZ 2"]
    assert told([secret], NOW) == []
    assert "secret_until" not in told([open_one], NOW)[0]
    assert withheld(NOW + DAY, NOW)
    assert not withheld(NOW + DAY, NOW + DAY)
    assert not withheld(None, NOW)


def test_the_access_file_lists_told_disclosures_and_says_nothing_without_them(tmp_path: Path):
    storage = FolderStorage(tmp_path)

    def information(disclosures: list[dict[str, object]]) -> dict[str, object]:
        bundle = BundleInput(
            request_id="req_1",
            subject="usr_1",
            storage_key="k",
            generated_at=NOW,
            status="completed",
            parts=[],
            settled=[],
            information={},
            disclosures=disclosures,
        )
        write_bundle(storage, "bundles/b.zip", bundle)
        with zipfile.ZipFile(tmp_path / "bundles" / "b.zip") as archive:
            body: dict[str, object] = json.loads(archive.read("information.json"))
        return body

    assert information(told([disclosure("AZ 1", NOW + DAY)], NOW)) == {"categories": {}}
    assert information(told([disclosure("AZ 1")], NOW))["disclosures"] == [
        told([disclosure("AZ 1")], NOW)[0]
    ]
