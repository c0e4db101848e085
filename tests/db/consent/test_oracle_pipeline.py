"""The consent pipeline on a real schema judged by the independent oracle (tests/support/
malformed.py): every accepted case has its inbox row and its projection change, every refused
one exactly one dead letter with the expected reason (conflicts included), ignored ones leave
nothing. Fresh cases each run; the seed is printed, `PP_ORACLE_SEED` replays it."""

from __future__ import annotations

from collections import Counter

import pytest

from shared.contract.topics import TOPIC_OF_TYPE
from tests.db.consent.conftest import Setup
from tests.support.malformed import SEED_ENV, Case, generate, reason_matches, seed_from_env
from tests.support.records import Record

pytestmark = pytest.mark.db

CASES = 3_000
BATCH = 250
CHANGES_STATE = frozenset(
    {
        "consent.granted.v1",
        "consent.withdrawn.v1",
        "consent.gpc_signal.v1",
        "processing.restricted.v1",
        "processing.objected.v1",
    }
)
"""Types whose event always changes a new subject's state (a projection row appears)."""


async def test_the_consent_pipeline_does_what_the_oracle_says_with_every_case(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = seed_from_env()
    with capsys.disabled():
        print(f"\noracle (consent pipeline): seed {seed} ({SEED_ENV}={seed} replays it)")
    cases = generate(seed, CASES)
    accepts = setup.pipeline.accepts
    records = [
        Record(TOPIC_OF_TYPE[c.event_type], 0, offset, c.key, c.value)
        for offset, c in enumerate(cases)
    ]
    for start in range(0, len(records), BATCH):
        await setup.pipeline.process(records[start : start + BATCH])

    dead: dict[int, list[str]] = {}
    for row in await setup.outbox():
        if row.topic == "dead":
            dead.setdefault(int(row.headers["original_offset"]), []).append(row.headers["error"])
    async with setup.pool.acquire() as conn:
        inbox = {(r["source"], r["event_id"]) for r in await conn.fetch("SELECT * FROM inbox")}
        subjects = {r["subject_id"] for r in await conn.fetch("SELECT subject_id FROM subjects")}

    wrong: list[str] = []
    verdicts: Counter[str] = Counter()
    for offset, case in enumerate(cases):
        outcome, reason = case.expect(accepts)
        verdicts[f"{outcome} {reason}".strip()] += 1
        errors = dead.pop(offset, [])
        problem = _judge(case, outcome, reason, errors, inbox, subjects)
        if problem:
            wrong.append(f"#{case.n} {case.mutation} ({case.event_type}): {problem}")
    with capsys.disabled():
        print("oracle (consent pipeline): " + ", ".join(f"{k} {n}" for k, n in verdicts.items()))
    assert wrong[:20] == [], f"{len(wrong)} cases differ; replay with {SEED_ENV}={seed}"
    assert dead == {}  # no dead letter for a record that was not a case
    assert verdicts["accepted"] > CASES // 20
    assert verdicts["refused conflict"] > 0


def _judge(
    case: Case,
    outcome: str,
    reason: str,
    errors: list[str],
    inbox: set[tuple[str, str]],
    subjects: set[str],
) -> str:
    """What is wrong with how the pipeline treated `case` ("" when nothing is)."""
    if outcome == "refused":
        if len(errors) != 1 or not reason_matches(reason, errors[0]):
            return f"dead letters {errors}, want one for {reason}"
        return ""
    if errors:
        return f"dead-lettered ({errors}), want {outcome}"
    recorded = (case.source, case.event_id) in inbox
    if outcome == "ignored":
        return "recorded in the inbox, want ignored" if recorded else ""
    if not recorded:
        return "no inbox row"
    if case.event_type in CHANGES_STATE and case.subject not in subjects:
        return "no projection row for its subject"
    return ""
