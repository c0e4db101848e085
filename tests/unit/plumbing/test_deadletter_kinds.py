"""Dead-letter kinds and event types as metric labels: a fixed vocabulary, never the input."""

from __future__ import annotations

from typing import get_args

import orjson
import pytest

from shared.contract.codec import DecodeError, DecodeKind, decode, encode
from shared.plumbing.deadletters import DeadLetterKind, letter
from shared.plumbing.metrics import type_label
from tests.support import events as make
from tests.support.records import Record

GOOD = orjson.loads(encode(make.signed_up("usr_1"))[1])


def test_every_decode_kind_is_a_dead_letter_kind():
    assert {DeadLetterKind(kind) for kind in get_args(DecodeKind)} <= set(DeadLetterKind)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "undecodable"),
        (b"{", "undecodable"),
        (b"[1, 2]", "undecodable"),
        (orjson.dumps({**GOOD, "type": "made.up.v1"}), "unknown_type"),
        (orjson.dumps({**GOOD, "type": {"not": "a name"}}), "unknown_type"),
        (orjson.dumps({**GOOD, "data": {"account_id": 7}}), "invalid"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "id"}), "invalid"),
    ],
)
def test_each_refusal_of_the_decoder_says_its_kind(value, kind):
    with pytest.raises(DecodeError) as caught:
        decode(value)
    assert caught.value.kind == kind


def test_a_dead_letter_keeps_the_whole_reason_and_knows_its_origin():
    reason = "unknown event type 'made.up.v1'"
    row = letter(
        Record("t", 2, 41, b"k", b"v"), reason, DeadLetterKind.UNKNOWN_TYPE, topic="d", service="s"
    )
    assert (row.topic, row.key, row.value) == ("d", b"k", b"v")
    assert row.headers == {
        "original_topic": "t",
        "original_partition": "2",
        "original_offset": "41",
        "service": "s",
        "error": reason,
    }
    assert (row.origin, row.kind) == (("t", 2, 41), "unknown_type")


def test_only_contract_types_keep_their_name_as_a_label():
    assert type_label("account.signed_up.v1") == "account.signed_up.v1"
    assert type_label("made.up.v1") == "other"
    assert type_label("x" * 10_000) == "other"
