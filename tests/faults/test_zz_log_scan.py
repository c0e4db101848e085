"""No personal value the suite put into events appears in any service log of the session.

Runs last (file order): it feeds the consent and retention services personal values of its
own (consent evidence, rectification values, and the same inside poison input), then scans
every log file every service process of this session wrote, including the kill -9, bad input
and export runs before it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.contract.codec import encode, new_event
from shared.contract.events import (
    ConsentChangeData,
    ConsentGranted,
    ConsentSource,
    Evidence,
    RectificationRequested,
    RectificationRequestedData,
)
from tests.faults.harness import (
    ServiceProcess,
    processes,
    send,
    service_env,
    settled_dead_letters,
    wait_inbox,
)
from tests.faults.stats import PERSONAL_VALUES, STATS
from tests.faults.test_consent_faults import consent
from tests.faults.workloads import consent_stream, marker

pytestmark = pytest.mark.faults


def rectifications(count: int) -> list[RectificationRequested]:
    return [
        new_event(
            RectificationRequested,
            subject=f"usr_rect_{n}",
            source="dsr-portal",
            data=RectificationRequestedData(
                request_id=f"req_rect_{n}_{marker('ip', 'rid')[-6:]}",
                category="crm_data",
                fields={"email": marker("email", "rect"), "phone": marker("ua", "rect")},
            ),
        )
        for n in range(count)
    ]


def poison_with_personal_values(count: int) -> list[tuple[bytes, bytes]]:
    """Invalid events whose bodies carry personal values (their reasons get logged)."""
    cases = []
    for n in range(count):
        good = new_event(
            ConsentGranted,
            subject=f"usr_poison_{n}",
            source="web",
            data=ConsentChangeData(
                purpose="marketing_email",
                source=ConsentSource.WEB_FORM,
                evidence=Evidence(ip_hash=marker("ip", "poison"), user_agent=marker("ua", "p")),
            ),
        )
        body = json.loads(encode(good)[1])
        email = marker("email", "poison")
        variants = [
            {**body, "time": email},  # wrong type of time
            {**body, "type": email},  # unknown type named by a personal value
            {**body, "data": {**body["data"], "purpose": email * 8}},  # too long
            {**body, "data": {**body["data"], "evidence": email}},  # wrong type
            {**body, "data": {**body["data"], "source": email}},  # not an enum value
            {**body, "id": None},  # missing id
            {**body, "specversion": email},
        ]
        key = good.subject.encode()
        cases += [(key, json.dumps(v).encode()) for v in variants]
        cases.append((key, b'{"subject": "' + email.encode() + b'", "data": '))  # broken JSON
        cases.append((key, email.encode()))
    return cases


def retention(infra, topics, schema, logs: Path) -> ServiceProcess:
    env = service_env("RETENTION_", infra, topics, schema)
    return ServiceProcess(
        f"retention-logscan-{schema}", env, logs, app_module="services.retention.app"
    )


@pytest.mark.timeout(300)
async def test_no_personal_value_reaches_any_service_log(infra, spaces, service_logs):
    topics, schema = await spaces()
    retention_topics, retention_schema = await spaces()
    changes = consent_stream(600, 30, seed=77, tag="logscan")
    poison = poison_with_personal_values(10)
    rects = rectifications(40)
    consent_service = consent(infra, topics, schema, service_logs, "consent-logscan")
    retention_service = retention(infra, retention_topics, retention_schema, service_logs)
    async with processes(consent_service, retention_service):
        consent_service.start()
        retention_service.start()
        await consent_service.wait_ready()
        await retention_service.wait_ready()
        await send(infra.kafka, topics.consent_changes, [*changes, *poison])
        await send(infra.kafka, retention_topics.privacy_requests, rects)
        await send(infra.kafka, retention_topics.privacy_requests, poison)
        STATS.malformed_inputs += 2 * len(poison)
        await wait_inbox(infra, schema, len(changes))
        await wait_inbox(infra, retention_schema, len(rects))
        # Positive signals that the poison went through (its reasons logged) before the scan:
        # each service consumed up to the end offsets and dead-lettered every poison record.
        for service, topics_, schema_ in (
            (consent_service, topics, schema),
            (retention_service, retention_topics, retention_schema),
        ):
            dead = await settled_dead_letters(infra, topics_, schema_, service.app_module)
            assert len(dead) == len(poison), (service.label, len(dead))
        await consent_service.terminate()
        await retention_service.terminate()

    files = sorted(service_logs.glob("*.log"))
    assert files
    values = sorted(PERSONAL_VALUES)
    assert len(values) > 100
    hits: list[str] = []
    scanned = 0
    for path in files:
        text = path.read_text(errors="replace")
        scanned += len(text)
        hits += [f"{path.name}: {value}" for value in values if value in text]
    STATS.leaked += len(hits)
    STATS.notes.append(
        f"log scan: {len(values)} personal values, {len(files)} log files, "
        f"{scanned // 1024} KiB scanned at {datetime.now(UTC):%H:%M:%S}Z, {len(hits)} found"
    )
    assert hits == []
