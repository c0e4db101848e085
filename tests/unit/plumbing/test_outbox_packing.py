"""A transaction's outbox rows packed into one value and read back unchanged."""

from __future__ import annotations

import pytest

from shared.plumbing.outbox import OutboxRow, messages, pack, unpack


def rows() -> list[OutboxRow]:
    return [
        OutboxRow("consent.state", b"usr_1", b'{"a":1}', {"ce_type": "consent.state.v1"}, "e1"),
        OutboxRow("consent.state", b"usr_1", None),  # a tombstone
        OutboxRow("privacy.deadletter", None, b"\xff\x00raw", {"error": "contract: ü"}),
        OutboxRow("privacy.deadletter", b"", b"", {}, "é"),  # empty is not null
        OutboxRow("t", b"k" * 70_000, bytes(range(256)) * 4_000, {"n": "1"}, "big"),
    ]


def test_unpack_gives_back_every_row_in_order():
    assert unpack(pack(rows())) == rows()


STRUCTURED = b'{"content-type":"application/cloudevents+json; charset=UTF-8"}'


def test_the_relay_reads_packed_and_one_message_rows_in_order():
    # The rows carry the headers of before structured mode: the relay sends today's instead.
    legacy = (1, "old.topic", b"k", b"v", '{"ce_type": "x"}', None)
    packed = (2, None, None, None, None, pack(rows()[:2]))
    assert messages([legacy, packed]) == [  # type: ignore[list-item]
        ("old.topic", b"k", b"v", STRUCTURED),
        ("consent.state", b"usr_1", b'{"a":1}', STRUCTURED),
        ("consent.state", b"usr_1", None, b"{}"),
    ]


def test_only_the_old_event_headers_are_replaced_never_a_dead_letters_own():
    letter = {"ce_type": "consent.granted.v1", "ce_id": "e1", "error": "invalid"}
    new = OutboxRow("consent.state", b"usr_1", b"{}", {"content-type": "application/json"})
    packed = (1, None, None, None, None, pack([OutboxRow("d", b"k", b"v", letter), new]))
    legacy = (2, "d", b"k", b"v", '{"ce_type": "x", "ce_id": "1"}', None)
    assert [m[3] for m in messages([packed, legacy])] == [  # type: ignore[list-item]
        b'{"ce_type":"consent.granted.v1","ce_id":"e1","error":"invalid"}',
        b'{"content-type":"application/json"}',
        '{"ce_type": "x", "ce_id": "1"}',
    ]


def test_an_unknown_packing_is_refused_not_misread():
    with pytest.raises(ValueError, match="unknown packing"):
        unpack(b"\x02" + pack(rows())[1:])


def test_rows_sharing_one_headers_dict_keep_their_own_other_fields():
    shared = {"ce_type": "consent.state.v1"}
    rows = [OutboxRow("t", f"k{i}".encode(), b"v", shared, f"e{i}") for i in range(3)]
    rows.append(OutboxRow("t", b"k", b"v", {"ce_type": "other"}))
    assert unpack(pack(rows)) == rows
