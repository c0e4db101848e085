"""Policy 3.2 on real Kafka and PostgreSQL: disclosures to authorities are kept per person."""

from __future__ import annotations

import pytest

from tests.integration.retention.harness import DAY, T0, Harness, eventually, signed_up
from tests.support import events as make

pytestmark = pytest.mark.integration


async def test_a_disclosure_is_kept_per_person_and_shown_in_the_subject_view(infra, topics, schema):
    h = await Harness.start(infra, topics, schema)
    try:
        await h.send(topics.accounts_lifecycle, signed_up("usr_d", "acc_d"))
        public = make.disclosure("usr_d", "disc_1", disclosed_at=T0 - DAY, at=T0)
        secret = make.disclosure(
            "usr_d", "disc_2", disclosed_at=T0, secret_until=T0 + 30 * DAY, at=T0
        )
        await h.send(topics.legal_holds, public, secret, public)  # a replay records nothing new
        view = await eventually(
            lambda: h.get("/v1/subjects/usr_d/retention"), lambda v: len(v["disclosures"]) >= 2
        )
        shown = {d["disclosure_id"]: d for d in view["disclosures"]}
        assert list(shown) == ["disc_1", "disc_2"]
        assert shown["disc_1"]["authority_kind"] == "court"
        assert shown["disc_1"]["legal_basis"] == "GDPR Art. 6(1)(c) with § 100g StPO"
        assert shown["disc_1"]["reference"] == "AZ disc_1"
        assert shown["disc_1"]["categories"] == ["crm_data"]
        assert shown["disc_1"]["disclosed_by"] == "legal:staff_42"
        assert (shown["disc_1"]["withheld"], shown["disc_2"]["withheld"]) == (False, True)
        other = await h.get("/v1/subjects/usr_other/retention")
        assert other["disclosures"] == []

        await h.advance(31 * DAY)  # secrecy over: the person may be told
        later = await h.get("/v1/subjects/usr_d/retention")
        assert [d["withheld"] for d in later["disclosures"]] == [False, False]
        assert len(await h.fetch("SELECT 1 FROM disclosures")) == 2
    finally:
        await h.stop()
