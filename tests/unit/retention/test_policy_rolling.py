"""Policy 1.3: usage data is kept 13 months while the account is open, purged every month."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.retention.domain import rolling
from services.retention.domain.model import Hold
from services.retention.domain.rolling import PurgeTimer
from shared.catalogue import ConfigError, Period, RollingRule, load_retention
from shared.contract.topics import Topics

T0 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)


def usage_rule() -> RollingRule:
    rule = load_retention().categories["usage_data"].while_open
    assert rule is not None
    return rule


def timer(due: datetime) -> PurgeTimer:
    return PurgeTimer(
        subject_id="usr_1", account_id="acc_1", category="usage_data", owner="analytics", due_at=due
    )


def test_usage_data_is_kept_13_months_while_open_and_purged_monthly():
    rule = usage_rule()
    assert (rule.keep, rule.every) == (Period(months=13), Period(months=1))
    assert list(load_retention().rolling()) == ["usage_data"]


def test_a_rolling_rule_needs_time_and_is_refused_naming_the_category(tmp_path: Path):
    with pytest.raises(ValueError, match="longer than P0D"):
        RollingRule(keep=Period(), every=Period(months=1))
    path = tmp_path / "retention.yaml"
    path.write_text(
        "categories:\n  usage_data:\n    owner: analytics\n    period: P30D\n"
        "    while_open: {keep: P13X}\n"
    )
    with pytest.raises(ConfigError, match=r"categories.usage_data.while_open"):
        load_retention(path)


def test_the_first_purge_waits_for_the_limit_and_cuts_off_13_months_back():
    rule = usage_rule()
    first = rolling.first_purge(rule, T0)
    assert first == datetime(2027, 2, 28, 10, 0, tzinfo=UTC)  # 31 Jan + 13 months, clamped
    assert rolling.purge_cutoff(rule, first) == datetime(2026, 1, 28, 10, 0, tzinfo=UTC)
    assert Period(months=1).before(datetime(2026, 3, 31, tzinfo=UTC)) == datetime(
        2026, 2, 28, tzinfo=UTC
    )


def test_a_due_purge_issues_a_stable_job_and_the_next_round_skips_rounds_already_past():
    rule = usage_rule()
    due = datetime(2027, 3, 1, tzinfo=UTC)
    firing = rolling.fire_purge(timer(due), rule, [], due)
    assert firing.issues
    assert firing.before == datetime(2026, 2, 1, tzinfo=UTC)
    assert firing.next_due == datetime(2027, 4, 1, tzinfo=UTC)
    assert firing.job_id == rolling.fire_purge(timer(due), rule, [], due).job_id
    assert firing.job_id != rolling.fire_purge(timer(firing.next_due), rule, [], due).job_id
    late = datetime(2027, 6, 15, tzinfo=UTC)  # the service was down for months: one purge
    assert rolling.next_purge(rule, due, late) == datetime(2027, 7, 1, tzinfo=UTC)


def test_a_hold_covering_the_category_skips_the_round_and_one_on_another_does_not():
    rule = usage_rule()
    due = datetime(2027, 3, 1, tzinfo=UTC)
    held = Hold(hold_id="h1", scope="account", account_id="acc_1", reason="subpoena")
    other = Hold(
        hold_id="h2", scope="subject", subject_id="usr_1", categories=("crm_data",), reason="x"
    )
    firing = rolling.fire_purge(timer(due), rule, [held, other], due)
    assert not firing.issues
    assert firing.blocked_by == ("h1",)
    assert rolling.fire_purge(timer(due), rule, [other], due).issues


def test_the_dry_run_says_the_limit_and_the_next_purge():
    rule = usage_rule()
    due = datetime(2027, 3, 1, tzinfo=UTC)
    assert (
        rolling.purge_answer("usage_data", "analytics", rule, due, due.replace(day=1)) is not None
    )
    assert rolling.purge_answer("usage_data", "analytics", rule, due, T0) is None
    answer = rolling.purge_answer("usage_data", "analytics", rule, due, due)
    assert answer is not None
    assert answer.action == "purge"
    assert "kept P13M while the account is open" in answer.reason
    assert "records before 2026-02-01T00:00:00+00:00" in answer.reason


def test_purge_jobs_and_receipts_are_new_types_on_jobs_and_receipts():
    topics = Topics()
    assert topics.for_type("purge.job.v1") == topics.privacy_jobs
    assert topics.for_type("purge.completed.v1") == topics.privacy_receipts
    assert topics.for_type("purge.failed.v1") == topics.privacy_receipts
