"""The decoder and every service's consumer against an oracle that does not use them.

Fresh cases each run (`tests/support/malformed.py`, built by construction from valid events
and the JSON Schemas); the seed is printed, and `PP_ORACLE_SEED=<seed>` replays a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import pytest

from shared.contract.codec import DecodeError, decode
from shared.contract.topics import TOPIC_OF_TYPE
from shared.plumbing.pipeline import Pipeline
from tests.support.malformed import (
    SEED_ENV,
    Case,
    distinct_malformed,
    generate,
    reason_matches,
    seed_from_env,
)
from tests.support.records import Record

CASES = 20_000
MALFORMED_AT_LEAST = 10_000


@pytest.fixture(scope="module")
def drawn() -> tuple[int, list[Case]]:
    seed = seed_from_env()
    return seed, generate(seed, CASES)


@pytest.fixture
def replay_hint(drawn: tuple[int, list[Case]]) -> str:
    return f"{SEED_ENV}={drawn[0]}"


def _short(case: Case) -> str:
    return f"#{case.n} {case.mutation} ({case.event_type}): {case.value!r:.120}"


def test_the_decoder_accepts_and_refuses_exactly_what_the_contract_says(
    drawn: tuple[int, list[Case]], replay_hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed, cases = drawn
    with capsys.disabled():  # pytest hides a passing test's output
        print(f"\noracle: seed {seed} ({replay_hint} replays it), {len(cases)} cases")
    wrong: list[str] = []
    verdicts: Counter[str] = Counter()
    for case in cases:
        event_type: str
        try:
            event_type, reason = decode(case.value).type, ""
        except DecodeError as exc:
            event_type, reason = "", exc.reason
        if case.refusal:
            verdicts[f"decoder refused {case.refusal}"] += 1
            if not reason or not reason_matches(case.refusal, reason):
                wrong.append(f"{_short(case)} -> {reason or 'accepted'} (want {case.refusal})")
        else:
            verdicts["decoder accepted"] += 1
            if event_type != case.event_type:
                wrong.append(f"{_short(case)} -> refused: {reason}")
    malformed = distinct_malformed(cases)
    with capsys.disabled():
        print(f"oracle: {malformed} distinct malformed; " + ", ".join(sorted(_fmt(verdicts))))
    assert wrong[:20] == [], f"{len(wrong)} verdicts differ; replay with {replay_hint}"
    assert malformed >= MALFORMED_AT_LEAST
    assert verdicts["decoder accepted"] >= CASES // 10  # valid-but-unusual events are judged too


def _fmt(counts: Counter[str]) -> Iterator[str]:
    return (f"{name} {n}" for name, n in counts.items())


def _accepts(service: str) -> frozenset[str]:
    module = __import__(f"services.{service}.handlers", fromlist=["HANDLERS"])
    return frozenset(module.HANDLERS.accepts)


async def _never(*_: Any) -> None:
    raise AssertionError("decode_batch applies nothing")


@pytest.mark.parametrize("service", ["consent", "retention", "export"])
def test_each_consumer_dead_letters_ignores_or_delivers_as_the_contract_says(
    service: str, drawn: tuple[int, list[Case]], replay_hint: str
) -> None:
    """The consumer's first step on every case: one dead letter with the expected reason, or
    nothing (a type the service does not take), or a delivery (conflicts are found later,
    against the inbox: tests/db/consent/test_oracle_pipeline.py)."""
    _, cases = drawn
    accepts = _accepts(service)
    pipeline = Pipeline(
        service=service,
        schema="unused",
        pool=cast(Any, None),
        deadletter_topic="dead",
        accepts=accepts,
        apply=_never,
    )
    records = [
        Record(TOPIC_OF_TYPE.get(c.event_type, "consent_changes"), 0, offset, c.key, c.value)
        for offset, c in enumerate(cases)
    ]
    deliveries, poison = pipeline.decode_batch(records)
    dead = [(int(row.headers["original_offset"]), row.headers["error"]) for row in poison]
    assert len({offset for offset, _ in dead}) == len(dead)  # one dead letter per record
    dead_at = dict(dead)
    delivered = {d.record.offset for d in deliveries}
    wrong: list[str] = []
    for offset, case in enumerate(cases):
        outcome, reason = case.expect(accepts)
        error = dead_at.get(offset)
        if outcome == "refused" and case.pipeline != "conflict":
            if error is None or not reason_matches(reason, error):
                wrong.append(f"{_short(case)} -> {error} (want {reason})")
        elif outcome == "ignored":
            if error is not None or offset in delivered:
                wrong.append(f"{_short(case)} -> {error or 'delivered'} (want ignored)")
        elif error is not None or offset not in delivered:
            wrong.append(f"{_short(case)} -> {error or 'dropped'} (want delivered)")
    assert wrong[:20] == [], f"{len(wrong)} verdicts differ; replay with {replay_hint}"
