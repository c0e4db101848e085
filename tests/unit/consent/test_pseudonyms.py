"""Which pseudonym a person's rows go under when the ledger key has several keys."""

from __future__ import annotations

from services.consent.context import Context
from services.consent.handlers import name
from services.consent.ledger import pseudonym
from services.consent.pseudonyms import Pseudonym, candidates, choose
from services.consent.settings import ConsentSettings

KEYS = (("k2", b"new-key-0123456789"), ("k1", b"old-key-0123456789"))


def test_a_subject_is_named_under_every_listed_key_current_first() -> None:
    names = candidates(KEYS, "usr_1")
    assert names == [
        Pseudonym("k2", pseudonym(b"new-key-0123456789", "usr_1")),
        Pseudonym("k1", pseudonym(b"old-key-0123456789", "usr_1")),
    ]
    assert names[0].principal != names[1].principal


def test_a_new_person_is_named_with_the_current_key() -> None:
    assert choose(candidates(KEYS, "usr_1"), chained=set()).kid == "k2"


def test_an_existing_ledger_continues_under_the_key_it_began_with() -> None:
    names = candidates(KEYS, "usr_1")
    assert choose(names, chained={names[1].principal}) == names[1]


def _context(ledger_key: str) -> Context:
    settings = ConsentSettings(
        kafka_bootstrap_servers="k:9092",
        database_url="postgresql://x/y",  # type: ignore[arg-type]
        api_token="t" * 16,  # type: ignore[arg-type]
        ledger_key=ledger_key,  # type: ignore[arg-type]
    )
    return Context.from_settings(settings)


def test_a_replay_marks_a_person_erased_under_an_older_key_as_gone() -> None:
    ctx = _context("k2:new-key-0123456789\nk1:old-key-0123456789")
    gone = {pseudonym(b"old-key-0123456789", "usr_1")}  # the copied suppression list
    principal = name(ctx, "usr_1", gone)
    assert principal == pseudonym(b"new-key-0123456789", "usr_1")
    assert principal in gone
    assert name(ctx, "usr_2", gone) not in gone
