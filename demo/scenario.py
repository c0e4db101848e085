"""The scripted scenario: one person's life through Privacy Plane, step by step.

Every wait has a deadline: when an outcome does not show up in time, `DemoFailed` says what the
demo was waiting for. Fresh subject, account and request ids each run, so it can run again.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from demo.api import Api
from demo.config import DemoConfig
from demo.narrate import Narrator, day, short
from demo.owners import SELF_ANSWERING, Job, OwnersTimeout, SimulatedOwners
from shared.catalogue import load_purposes
from shared.contract.codec import encode, new_event
from shared.contract.envelope import CloudEvent, Data
from shared.contract.events import (
    AccountClosed,
    AccountClosedData,
    AccountSignedUp,
    AccountSignedUpData,
    ConsentChangeData,
    ConsentSource,
    ConsentWithdrawn,
    DeletionJob,
    ErasureRequested,
    ErasureRequestedData,
    ExportJob,
    ExportRequested,
    ExportRequestedData,
    GpcSignal,
    GpcSignalData,
    HoldReason,
    LegalHoldPlaced,
    LegalHoldPlacedData,
    LegalHoldReleased,
    LegalHoldReleasedData,
    SignUpConsent,
)

READY_WAIT_S = 30
"""How long the demo waits for a stack that was just started to say it is ready."""

T = TypeVar("T")
STEPS = 6
SOURCE = "demo"
GRANTED_AT_SIGNUP = ("marketing_email", "analytics_cookies")
FINISHED_EXPORT = ("completed", "partially_completed")


class DemoFailed(Exception):
    """An outcome the demo waited for did not show up in time."""


@dataclass
class DemoResult:
    """What the scenario saw, for the summary line and for tests."""

    subject: str
    account: str
    signup_decisions: dict[str, bool] = field(default_factory=dict)
    optout_allowed: bool | None = None
    marketing_job: dict[str, Any] = field(default_factory=dict)
    certificate: dict[str, Any] = field(default_factory=dict)
    gpc_withdrawn: list[str] = field(default_factory=list)
    export_owners: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    schedule: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    jobs_before_release: int = 0
    released_jobs: list[dict[str, Any]] = field(default_factory=list)
    erasure_status: str | None = None
    bundle_after_erasure: int | None = None
    ledger_chain_ok: bool | None = None
    jobs_answered: int = 0
    seconds: float = 0.0


class Scenario:
    """Runs the six steps against one fresh person."""

    def __init__(
        self, config: DemoConfig, say: Narrator, api: Api, owners: SimulatedOwners
    ) -> None:
        self.config = config
        self.say = say
        self.api = api
        self.owners = owners
        self.topics = config.topics
        run = uuid.uuid4().hex
        self.subject = f"usr_{run[:12]}"
        self.account = f"acc_{run[12:24]}"
        self.result = DemoResult(subject=self.subject, account=self.account)
        self.download_url = ""
        self._producer: AIOKafkaProducer | None = None

    # --- plumbing of the demo itself ------------------------------------------------------

    async def publish(self, topic: str, event: CloudEvent[Any]) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.config.bootstrap, enable_idempotence=True, acks="all"
            )
            await self._producer.start()
        key, value = encode(event)
        await self._producer.send_and_wait(topic, value=value, key=key)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    def event(self, model: type[Any], data: Data, subject: str | None = None) -> Any:
        return new_event(model, subject=subject or self.subject, source=SOURCE, data=data)

    async def until(self, what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
        """Poll `probe` until it gives a value (not None/False), or fail naming `what`."""
        deadline = time.monotonic() + self.config.wait
        while True:
            value = await probe()
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                raise DemoFailed(f"waited {self.config.wait:.0f} s for {what}")
            await asyncio.sleep(0.2)

    async def jobs(self, what: str, matches: Callable[[Job], bool], count: int = 1) -> list[Job]:
        try:
            return await self.owners.wait_for(what, matches, count, self.config.wait)
        except OwnersTimeout as exc:
            raise DemoFailed(f"waited {self.config.wait:.0f} s for {exc}") from exc

    # --- the story ------------------------------------------------------------------------

    async def run(self) -> DemoResult:
        started = time.monotonic()
        self.owners.add_person(self.subject)
        self.say.title(f"Privacy Plane demo — person {self.subject}, account {self.account}")
        await self.sign_up()
        await self.opt_out()
        await self.gpc()
        await self.export()
        await self.close_account()
        await self.legal_hold()
        self.result.jobs_answered = self.owners.answers
        self.result.seconds = time.monotonic() - started
        return self.result

    async def sign_up(self) -> None:
        self.say.step(1, STEPS, "Sign-up with consents")
        data = AccountSignedUpData(
            account_id=self.account,
            jurisdiction="DE",
            policy_version="2026-10",
            consents=[SignUpConsent(purpose=p, granted=True) for p in GRANTED_AT_SIGNUP],
        )
        await self.publish(self.topics.accounts_lifecycle, self.event(AccountSignedUp, data))
        self.say.action(
            f"account.signed_up.v1: {short(self.subject)} signs up, "
            f"grants {' and '.join(GRANTED_AT_SIGNUP)}"
        )

        async def granted() -> dict[str, Any] | None:
            d = await self.api.decision(self.subject, "marketing_email")
            return d if d["allowed"] else None

        await self.until("consent to record the sign-up grants", granted)
        rows = []
        for purpose in (*GRANTED_AT_SIGNUP, "personalisation"):
            d = await self.api.decision(self.subject, purpose)
            self.result.signup_decisions[purpose] = bool(d["allowed"])
            rows.append((purpose, _yes(d["allowed"]), d["reason"]))
        self.say.outcome("consent answers GET /v1/subjects/{id}/decisions?purpose=…")
        self.say.table(("purpose", "allowed", "why"), rows)

    async def opt_out(self) -> None:
        self.say.step(2, STEPS, "Marketing opt-out → its data is deleted")
        data = ConsentChangeData(purpose="marketing_email", source=ConsentSource.EMAIL_LINK)
        clicked = time.monotonic()
        await self.publish(self.topics.consent_changes, self.event(ConsentWithdrawn, data))
        self.say.action("consent.withdrawn.v1: marketing_email, from the unsubscribe link")

        async def denied() -> dict[str, Any] | None:
            d = await self.api.decision(self.subject, "marketing_email")
            return None if d["allowed"] else d

        d = await self.until("marketing_email to be denied after the opt-out", denied)
        self.result.optout_allowed = bool(d["allowed"])
        self.say.outcome(
            f"marketing_email is now denied ({d['reason']}), "
            f"{time.monotonic() - clicked:.1f} s after the click"
        )
        [job] = await self.jobs(
            "retention's deletion.job.v1 for marketing_profile",
            lambda j: (
                isinstance(j, DeletionJob)
                and j.subject == self.subject
                and j.data.category == "marketing_profile"
                and j.data.reason.value == "consent_withdrawn"
            ),
        )
        assert isinstance(job, DeletionJob)
        self.result.marketing_job = job.data.model_dump(mode="json")
        self.say.outcome(
            f"retention issued deletion.job.v1 on {self.topics.privacy_jobs}: "
            f"job {short(job.data.job_id)} → owner {job.data.owner}, "
            f"{job.data.mode.value} {job.data.category} ({job.data.reason.value}), "
            f"due by {day(job.data.due_by)}"
        )
        self.say.note(f"the simulated {job.data.owner} owner answers deletion.completed.v1")
        job_id = job.data.job_id

        async def certified() -> tuple[dict[str, Any], dict[str, Any]] | None:
            view = await self.api.retention_view(self.subject)
            done = [j for j in view["jobs"] if j["job_id"] == job_id and j["status"] == "completed"]
            certs = [c for c in view["certificates"] if c.get("job_id") == job_id]
            return (done[0], certs[0]) if done and certs else None

        what = f"job {short(job_id)} to complete with a certificate"
        done, cert = await self.until(what, certified)
        self.result.certificate = cert
        self.say.outcome(
            f"retention: job completed, {done['records_deleted']} records deleted; "
            f"certificate #{cert['seq']} (hash {cert['hash'][:12]}…)"
        )

    async def gpc(self) -> None:
        self.say.step(3, STEPS, "Global Privacy Control signal")
        gpc_purposes = load_purposes().gpc_purposes()
        await self.publish(
            self.topics.consent_changes, self.event(GpcSignal, GpcSignalData(evidence=None))
        )
        self.say.action("consent.gpc_signal.v1: the browser sends Sec-GPC: 1")

        async def honoured() -> dict[str, Any] | None:
            state = await self.api.consent_state(self.subject)
            return state if state.get("gpc") else None

        state = await self.until("consent to record the GPC signal", honoured)
        rows = []
        for purpose in sorted(state["purposes"]):
            d = await self.api.decision(self.subject, purpose)
            applies = purpose in gpc_purposes
            if applies and d["state"] == "withdrawn":
                self.result.gpc_withdrawn.append(purpose)
            rows.append((purpose, "yes" if applies else "", _yes(d["allowed"]), d["reason"]))
        self.say.outcome(f"every gpc_applies purpose is withdrawn: {', '.join(gpc_purposes)}")
        self.say.table(("purpose", "GPC applies", "allowed", "why"), rows)

    async def export(self) -> None:
        self.say.step(4, STEPS, "Export request (access and portability)")
        request_id = f"exp_{uuid.uuid4().hex[:12]}"
        data = ExportRequestedData(request_id=request_id, verified_by="demo:portal")
        await self.publish(self.topics.privacy_requests, self.event(ExportRequested, data))
        self.say.action(f"export.requested.v1: request {short(request_id)}")

        async def finished() -> dict[str, Any] | None:
            view = await self.api.export_view(request_id)
            if view and view["status"] in FINISHED_EXPORT and view.get("download_url"):
                return view
            return None

        view = await self.until(f"export {short(request_id)} to finish with a link", finished)
        issued = [
            j
            for j in self.owners.seen
            if isinstance(j, ExportJob) and j.data.request_id == request_id
        ]
        owners = sorted(j.data.owner for j in issued)
        self.result.export_owners = owners
        simulated = [o for o in owners if o not in SELF_ANSWERING]
        self.say.outcome(
            f"export issued export.job.v1 to {len(owners)} owners; simulated owners answered "
            f"with sealed parts ({', '.join(simulated)})"
        )
        for owner in sorted(SELF_ANSWERING & set(owners)):
            self.say.note(f"{owner}: answered by the {owner} service itself (its ledger)")
        self.say.outcome(
            f"GET /v1/exports/{short(request_id)}: {view['status']}, signed link valid until "
            f"{str(view['download_expires_at'])[:19]}"
        )
        response = await self.api.download(view["download_url"])
        if response.status_code != 200:
            raise DemoFailed(f"the download link answered {response.status_code}")
        self.download_url = view["download_url"]
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        manifest: dict[str, Any] = json.loads(archive.read("manifest.json"))
        self.result.manifest = manifest
        self.say.outcome(
            f"downloaded the zip ({len(response.content):,} bytes); manifest.json "
            f"(status {manifest['status']}, format {manifest['format_version']}):"
        )
        self.say.table(
            ("file", "records", "parts", "sha256"),
            [
                (f["path"], f["record_count"], len(f["parts"]), f["sha256"][:16] + "…")
                for f in manifest["files"]
            ],
        )
        for missing in manifest["not_included"]:
            self.say.note(f"not included: {missing['category']} ({missing.get('reason')})")

    async def close_account(self) -> None:
        self.say.step(5, STEPS, "Account closure → retention schedule")
        closed_at = datetime.now(UTC)
        data = AccountClosedData(account_id=self.account, closed_at=closed_at)
        await self.publish(self.topics.accounts_lifecycle, self.event(AccountClosed, data))
        self.say.action(f"account.closed.v1: account {short(self.account)} closed")

        async def scheduled() -> dict[str, Any] | None:
            view = await self.api.retention_view(self.subject)
            rows = [t for t in view["schedule"] if t["cause"] == "closure"]
            return view if view["account_status"] == "closed" and rows else None

        view = await self.until("retention to schedule the closure timers", scheduled)
        rows = [t for t in view["schedule"] if t["cause"] == "closure"]
        rules = {c["category"]: _rule(c) for c in view.get("categories", [])}
        self.result.schedule = rows
        self.say.outcome("retention's schedule (GET /v1/subjects/{id}/retention):")
        self.say.table(
            ("category", "owner", "rule", "action", "due", "status"),
            [
                (
                    r["category"],
                    r["owner"],
                    rules.get(r["category"], ""),
                    r["mode"],
                    day(r["due_at"]),
                    _timer(r),
                )
                for r in sorted(rows, key=lambda r: (str(r["due_at"]), r["category"]))
            ],
        )

    async def legal_hold(self) -> None:
        self.say.step(6, STEPS, "Legal hold blocks an erasure; its release lets it through")
        hold_id = f"hold_{uuid.uuid4().hex[:12]}"
        placed = LegalHoldPlacedData(
            hold_id=hold_id, scope="account", account_id=self.account, reason=HoldReason.COURT_ORDER
        )
        await self.publish(
            self.topics.legal_holds, self.event(LegalHoldPlaced, placed, subject=self.account)
        )
        self.say.action(f"legal_hold.placed.v1: court order on account {short(self.account)}")

        async def hold_active() -> dict[str, Any] | None:
            return next((h for h in await self.api.holds() if h["hold_id"] == hold_id), None)

        hold = await self.until(f"hold {short(hold_id)} to be in force", hold_active)
        self.say.outcome(hold["explanation"])

        erasure_id = f"era_{uuid.uuid4().hex[:12]}"
        data = ErasureRequestedData(request_id=erasure_id, scope="all", verified_by="demo:support")
        await self.publish(self.topics.privacy_requests, self.event(ErasureRequested, data))
        self.say.action(f"erasure.requested.v1: request {short(erasure_id)}, scope all")

        async def decided() -> dict[str, Any] | None:
            req = await self.api.request(erasure_id)
            return req if req and req["outcomes"] else None

        req = await self.until(f"erasure {short(erasure_id)} to be decided", decided)
        blocked = [o for o in req["outcomes"] if o["outcome"] == "blocked"]
        self.result.blocked = sorted(o["category"] for o in blocked)
        self.say.outcome(
            f"GET /v1/requests/{short(erasure_id)}: {req['status']}, "
            f"{len(blocked)} of {len(req['outcomes'])} categories blocked"
        )
        self.say.table(
            ("category", "owner", "outcome", "why"),
            [(o["category"], o["owner"], o["outcome"], o["reason"]) for o in req["outcomes"]],
        )

        def of_erasure(j: Job) -> bool:
            return isinstance(j, DeletionJob) and j.data.request_id == erasure_id

        async def timers_blocked() -> list[dict[str, Any]] | None:
            view = await self.api.retention_view(self.subject)
            now = datetime.now(UTC)
            rows = [
                t
                for t in view["schedule"]
                if t["request_id"] == erasure_id and datetime.fromisoformat(t["due_at"]) <= now
            ]
            return rows if rows and all(t["status"] == "blocked" for t in rows) else None

        # once the timer loop has held back every due timer, no job can have gone out
        timers = await self.until("the erasure's due timers to be held back", timers_blocked)
        self.result.jobs_before_release = len([j for j in self.owners.seen if of_erasure(j)])
        self.say.note(
            f"{len(timers)} due timers held back by the hold; "
            f"deletion jobs issued: {self.result.jobs_before_release}"
        )

        released = LegalHoldReleasedData(hold_id=hold_id, scope="account", account_id=self.account)
        await self.publish(
            self.topics.legal_holds, self.event(LegalHoldReleased, released, subject=self.account)
        )
        self.say.action(f"legal_hold.released.v1: hold {short(hold_id)} released")
        jobs = await self.jobs(
            "the blocked deletion jobs to be issued after the release", of_erasure, len(blocked)
        )
        self.result.released_jobs = [
            j.data.model_dump(mode="json") for j in jobs if isinstance(j, DeletionJob)
        ]
        self.say.outcome(f"retention issued {len(jobs)} jobs on {self.topics.privacy_jobs}:")
        self.say.table(
            ("job", "owner", "category", "action", "reason"),
            [_job_row(j) for j in jobs if isinstance(j, DeletionJob)],
        )

        async def settled() -> dict[str, Any] | None:
            req = await self.api.request(erasure_id)
            return req if req and req["status"] not in ("pending", "in_progress") else None

        req = await self.until(f"erasure {short(erasure_id)} to settle", settled)
        self.result.erasure_status = req["status"]
        kept = [o for o in req["outcomes"] if o["outcome"] != "deleted"]
        self.say.outcome(
            f"the owners answered: erasure {req['status']}"
            + "".join(f"; {o['category']} {o['outcome']} ({o['reason']})" for o in kept)
        )

        async def bundle_gone() -> int | None:
            code = (await self.api.download(self.download_url)).status_code
            return code if code == 410 else None

        self.result.bundle_after_erasure = await self.until(
            "the export bundle to be deleted after the erasure", bundle_gone
        )
        self.say.outcome("the export bundle of step 4 was deleted too: its link now answers 410")

        async def forgotten() -> dict[str, Any] | None:
            state = await self.api.consent_state(self.subject)
            if state.get("version"):
                return None
            chain: dict[str, Any] = await self.api.ledger_check(self.subject)
            return chain

        chain = await self.until("consent to forget the person's choices", forgotten)
        self.result.ledger_chain_ok = bool(chain["ok"])
        if not chain["ok"]:
            raise DemoFailed(f"the consent ledger no longer verifies: {chain['reason']}")
        self.say.outcome(
            f"consent forgot the choices; its ledger's hash chain still verifies "
            f"({chain['checked']} entries, personal fields scrubbed)"
        )


def _job_row(job: DeletionJob) -> tuple[str, ...]:
    d = job.data
    return (short(d.job_id), d.owner, d.category, d.mode.value, d.reason.value)


def _yes(allowed: Any) -> str:
    return "[green]yes[/]" if allowed else "[red]no[/]"


def _rule(category: dict[str, Any]) -> str:
    """A category's retention rule in a few words, e.g. `P7Y after closure (tax)`."""
    start = "subscription terms" if category.get("period_from") else "closure"
    text = f"{category.get('period', '?')} after {start}"
    obligation = category.get("legal_obligation")
    return f"{text} (legal obligation: {obligation})" if obligation else text


def _timer(row: dict[str, Any]) -> str:
    if row.get("job_id"):
        return f"job issued ({short(row['job_id'])})"
    return str(row["status"])


async def run_scenario(config: DemoConfig, say: Narrator | None = None) -> DemoResult:
    """The whole scenario against the services `config` names; raises DemoFailed on a timeout."""
    say = say or Narrator()
    api = Api(config)
    try:
        down = await api.ready()
        for _ in range(READY_WAIT_S * 2):  # a stack just started answers within seconds
            if not down:
                break
            await asyncio.sleep(0.5)
            down = await api.ready()
        if down:
            raise DemoFailed(f"not ready: {', '.join(down)} — is `make run` running?")
        async with SimulatedOwners(config.bootstrap, config.topics, config.owners_group) as owners:
            scenario = Scenario(config, say, api, owners)
            try:
                return await scenario.run()
            finally:
                await scenario.close()
    finally:
        await api.close()
