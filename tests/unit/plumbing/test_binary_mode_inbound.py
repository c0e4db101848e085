"""Binary-mode records through the pipeline's decoding, and dead letters that keep headers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cloudevents.http import CloudEvent as SdkEvent
from cloudevents.kafka import to_binary, to_structured

from shared.cli.dlq import original
from shared.contract.codec import encode, kafka_headers
from shared.plumbing.deadletters import MAX_HEADERS, DeadLetterKind, letter
from shared.plumbing.pipeline import KEY_MISMATCH, Pipeline
from tests.support import events as make
from tests.support.records import Record

EVENT = make.granted("usr_9")
ATTRIBUTES = EVENT.model_dump(mode="json", exclude={"data"}, exclude_none=True)
DATA = EVENT.data.model_dump(mode="json", exclude_none=True)


async def _unused(*_: Any) -> None:
    raise AssertionError("not applied here")


PIPELINE = Pipeline(
    service="test",
    schema="unused",
    pool=None,  # type: ignore[arg-type]  # decode_batch never touches the database
    deadletter_topic="dead",
    accepts={EVENT.type},
    apply=_unused,
)


def record(offset: int, key: bytes | None, extra: dict[str, Any] | None = None, *, mode: str):
    sdk = SdkEvent.create({**ATTRIBUTES, **(extra or {})}, DATA)
    message = (to_binary if mode == "binary" else to_structured)(sdk, key_mapper=lambda _: key)
    value = message.value if isinstance(message.value, bytes) else message.value.encode()
    return Record("consent.changes", 0, offset, key, value, list(message.headers.items()))


def test_both_modes_decode_to_one_event_with_one_digest():
    deliveries, poison = PIPELINE.decode_batch(
        [record(0, b"usr_9", mode="binary"), record(1, b"usr_9", mode="structured")]
    )
    assert poison == []
    assert deliveries[0].event == deliveries[1].event == EVENT
    assert deliveries[0].digest == deliveries[1].digest


def test_a_record_without_a_key_is_taken_when_nothing_contradicts_the_subject():
    deliveries, poison = PIPELINE.decode_batch(
        [
            record(0, None, mode="binary"),
            record(1, None, {"partitionkey": "usr_9"}, mode="structured"),
            record(2, None, {"partitionkey": "usr_other"}, mode="structured"),
            record(3, b"usr_other", mode="binary"),
        ]
    )
    assert [d.record.offset for d in deliveries] == [0, 1]
    assert [(p.headers["original_offset"], p.headers["error"]) for p in poison] == [
        ("2", KEY_MISMATCH),
        ("3", KEY_MISMATCH),
    ]


def test_a_dead_letter_keeps_the_original_headers_beside_ours_and_replay_restores_them():
    poisoned = record(5, b"usr_9", {"type": "made.up.v1"}, mode="binary")
    (row,) = PIPELINE.decode_batch([poisoned])[1]
    originals = {k: v.decode() for k, v in poisoned.headers}
    assert row.headers == {
        **originals,
        "original_topic": "consent.changes",
        "original_partition": "0",
        "original_offset": "5",
        "service": "test",
        "error": "unknown event type 'made.up.v1'",
    }
    sent = SimpleNamespace(
        key=row.key, value=row.value, headers=[(k, v.encode()) for k, v in row.headers.items()]
    )
    assert original(sent) == ("consent.changes", b"usr_9", poisoned.value, poisoned.headers)


def test_headers_a_dead_letter_cannot_keep_as_they_were_are_flagged():
    def headers_of(given: list[tuple[str, bytes | None]]) -> dict[str, str]:
        source = Record("t", 0, 1, b"k", b"v", given)
        return letter(source, "why", DeadLetterKind.INVALID, topic="d", service="s").headers

    assert "original_headers_altered" not in headers_of([("a", b"1"), ("b", b"")])
    assert headers_of([("a", b"\xff")])["a"] == "\ufffd"
    odd_ones: list[list[tuple[str, bytes | None]]] = [
        [("a", b"\xff")],
        [("a", b"1"), ("a", b"2")],
        [("error", b"x")],
        [("a", None)],
    ]
    for odd in odd_ones:
        assert headers_of(odd)["original_headers_altered"] == "true"
    huge = headers_of([("a", b"x" * MAX_HEADERS)])
    assert "a" not in huge
    assert huge["original_headers_altered"] == "true"


def test_our_own_records_are_not_mistaken_for_binary_mode():
    key, value = encode(EVENT)
    ours = Record(
        "consent.changes", 0, 0, key, value, [(k, v.encode()) for k, v in kafka_headers().items()]
    )
    deliveries, poison = PIPELINE.decode_batch([ours])
    assert (poison, [d.event for d in deliveries]) == ([], [EVENT])
