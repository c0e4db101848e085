"""A FastStream middleware that drops messages whose subject has not allowed a purpose.

    consent = ConsentClient("kafka:9092")
    router = KafkaRouter(middlewares=[ConsentFilter(consent, "marketing_email")])

    @router.subscriber("crm.contacts", group_id="mailer", ack_policy=AckPolicy.NACK_ON_ERROR)
    async def send_newsletter(contact: Contact) -> None: ...   # only allowed subjects arrive

A dropped message is acknowledged (it is not for us), counted in
`pp_consent_filter_dropped_total{purpose,reason}`, and never reaches the handler. The filter
waits until the client has caught up before its first decision, so a starting consumer does
not drop messages of subjects it has not loaded yet. Single-message subscribers only: with
`batch=True`, call `ConsentClient.may_process` per record in the handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from faststream import BaseMiddleware
from faststream.message import StreamMessage
from prometheus_client import Counter

DROPPED = Counter(
    "pp_consent_filter_dropped_total",
    "Messages dropped by ConsentFilter because the subject has not allowed the purpose",
    ["purpose", "reason"],
)
PASSED = Counter(
    "pp_consent_filter_passed_total",
    "Messages ConsentFilter let through to the handler",
    ["purpose"],
)

SubjectOf = Callable[[StreamMessage[Any]], str | None]


class ConsentSource(Protocol):
    """What the filter needs from a consent client."""

    def may_process(self, subject: str, purpose: str) -> bool: ...

    async def wait_until_caught_up(self) -> None: ...

    @property
    def caught_up(self) -> bool: ...


def kafka_key_subject(msg: StreamMessage[Any]) -> str | None:
    """The subject is the Kafka key (the contract's rule); else a CloudEvents `subject`: the
    `ce_subject` header of a binary-mode event, or the value's `subject` in structured mode."""
    raw = msg.raw_message
    key = getattr(raw, "key", None)
    if isinstance(key, bytes) and key:
        return key.decode("utf-8", "replace")
    header = msg.headers.get("ce_subject")
    if isinstance(header, str | bytes) and header:
        return header.decode() if isinstance(header, bytes) else header
    try:
        body = orjson.loads(msg.body)
    except orjson.JSONDecodeError:
        return None
    subject = body.get("subject") if isinstance(body, dict) else None
    return subject if isinstance(subject, str) and subject else None


class ConsentFilter:
    """Middleware factory: pass to `KafkaBroker(middlewares=...)` or `KafkaRouter(...)`."""

    def __init__(
        self,
        consent: ConsentSource,
        *purposes: str,
        subject_of: SubjectOf = kafka_key_subject,
        ready_timeout: float | None = None,
    ) -> None:
        """Every purpose in `purposes` must be allowed for the message to pass."""
        if not purposes:
            raise ValueError("ConsentFilter needs at least one purpose")
        self.consent = consent
        self.purposes = purposes
        self.subject_of = subject_of
        self.ready_timeout = ready_timeout

    def __call__(self, msg: Any, /, *, context: Any) -> BaseMiddleware:
        return _ConsentFilterMiddleware(msg, context=context, rule=self)

    async def admit(self, msg: StreamMessage[Any]) -> bool:
        """True when the message may reach the handler; counts the drops."""
        if not self.consent.caught_up:
            async with asyncio.timeout(self.ready_timeout):
                await self.consent.wait_until_caught_up()
        subject = self.subject_of(msg)
        if subject is None:
            DROPPED.labels(purpose=self.purposes[0], reason="no_subject").inc()
            return False
        for purpose in self.purposes:
            if not self.consent.may_process(subject, purpose):
                DROPPED.labels(purpose=purpose, reason="not_allowed").inc()
                return False
        PASSED.labels(purpose=self.purposes[0]).inc()
        return True


class _ConsentFilterMiddleware(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, rule: ConsentFilter) -> None:
        super().__init__(msg, context=context)
        self.rule = rule

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        if await self.rule.admit(msg):
            return await call_next(msg)
        return None
