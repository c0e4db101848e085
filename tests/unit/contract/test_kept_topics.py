"""DESIGN §5: a topic kept without time limit carries no personal values, and every topic that
may carry them has a bounded retention (issue 21 item 4)."""

from __future__ import annotations

import json
from typing import Any

from shared.contract.envelope import PERSONAL
from shared.contract.schemas import SCHEMA_DIR
from shared.contract.topics import TOPIC_OF_TYPE, Topics
from shared.plumbing.kafka import DAY_MS, TopicPolicy

PERSONAL_MARK = next(iter(PERSONAL))  # "x-personal"


def marked_personal(schema: Any, path: str = "") -> list[str]:
    """Every place in a JSON Schema (its `$defs` included) marked `x-personal`."""
    found: list[str] = []
    if isinstance(schema, dict):
        if schema.get(PERSONAL_MARK) is True:
            found.append(path or "/")
        for key, value in schema.items():
            found += marked_personal(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += marked_personal(value, f"{path}/{index}")
    return found


def published_schema(event_type: str) -> Any:
    """The checked-in JSON Schema: what other teams code against."""
    return json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())


def topics_without_time_limit(topics: Topics) -> set[str]:
    """Kept topics and compacted ones (the latest value per key stays until a tombstone)."""
    configs = TopicPolicy().configs(topics)
    return {
        name
        for name, config in configs.items()
        if config.get("retention.ms") == "-1" or "compact" in config["cleanup.policy"]
    }


def test_no_event_type_on_a_topic_kept_without_time_limit_has_a_personal_field():
    topics = Topics()
    unlimited = topics_without_time_limit(topics)
    offending = {
        event_type: marked_personal(published_schema(event_type))
        for event_type in TOPIC_OF_TYPE
        if topics.for_type(event_type) in unlimited
    }
    assert {t: where for t, where in offending.items() if where} == {}


def test_the_check_sees_the_evidence_marks_it_guards_against():
    """The walk finds marks in nested definitions (consent evidence is a `$defs` model)."""
    where = marked_personal(published_schema("consent.granted.v1"))
    assert any("user_agent" in w for w in where)
    assert any("tcf_string" in w for w in where)


def test_every_topic_carrying_a_personal_field_has_bounded_retention():
    topics = Topics()
    configs = TopicPolicy().configs(topics)
    for event_type in TOPIC_OF_TYPE:
        if marked_personal(published_schema(event_type)):
            config = configs[topics.for_type(event_type)]
            assert config["cleanup.policy"] == "delete", event_type
            assert int(config["retention.ms"]) > 0, event_type


def test_consent_changes_ages_out_after_35_days_by_default():
    configs = TopicPolicy().configs(Topics())
    assert configs["consent.changes"]["retention.ms"] == str(35 * DAY_MS)
    assert TopicPolicy(changes_retention_ms=DAY_MS).configs(Topics())["consent.changes"][
        "retention.ms"
    ] == str(DAY_MS)


def test_policy_publications_are_kept_on_a_topic_of_their_own():
    topics = Topics()
    assert topics.for_type("policy.published.v1") == "privacy.policies"
    assert "privacy.policies" in topics.kept()
    assert "consent.changes" not in topics.kept()
