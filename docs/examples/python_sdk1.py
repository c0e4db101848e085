"""Privacy Plane events with the CloudEvents Python SDK 1.x (`pip install "cloudevents>=1.11,<2"`).

docs/integrating.md shows these functions; tests/integration/interop runs this very file
against the services on real Kafka.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, from_structured, to_binary, to_structured


# doc:begin sdk1-publish
def new_event(event_type: str, subject: str, data: dict[str, Any], source: str) -> CloudEvent:
    """A Privacy Plane event: `subject` is the person (the account for account-level events)."""
    attributes = {
        "type": event_type,  # e.g. "consent.granted.v1"
        "source": source,  # your service; `source` + `id` must be unique
        "id": str(uuid.uuid4()),
        "subject": subject,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",  # SDK 1.x's to_binary needs it
    }
    return CloudEvent.create(attributes, data)


def by_subject(event: CloudEvent) -> str:
    """The Kafka key: always the event's subject (it keeps one subject's events in order)."""
    return str(event["subject"])


def structured(event: CloudEvent) -> KafkaMessage:
    """Structured mode: the whole event is the JSON value."""
    return to_structured(event, key_mapper=by_subject)


def binary(event: CloudEvent) -> KafkaMessage:
    """Binary mode: attributes in `ce_*` headers, the data as the value."""
    return to_binary(event, key_mapper=by_subject)


async def send(producer: AIOKafkaProducer, topic: str, message: KafkaMessage) -> None:
    """Send one message with aiokafka (any client does: key, value and headers as they are)."""
    key = message.key.encode() if isinstance(message.key, str) else message.key
    headers = list(message.headers.items())
    await producer.send_and_wait(topic, message.value, key=key, headers=headers)


# doc:end


# doc:begin sdk1-read
def consumer(bootstrap: str, group_id: str, *topics: str) -> AIOKafkaConsumer:
    """A consumer of our outbound topics that sees committed records only."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        isolation_level="read_committed",  # never an event of an aborted transaction
        auto_offset_reset="earliest",
        enable_auto_commit=False,  # commit after you have handled a record
    )


def read(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> CloudEvent:
    """A consumed record as a CloudEvent, in either content mode (ours are structured)."""
    message = KafkaMessage(headers=dict(headers), key=key, value=value)
    if "ce_specversion" in message.headers:
        return from_binary(message)
    # SDK 1.x copies every header of a structured record into the attributes (its
    # content-type would become `datacontenttype`): the value alone has the event.
    return from_structured(message._replace(headers={}))


class LatestStates:
    """consent.state: keep the newest version per subject; a tombstone erases the subject."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def apply(self, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]]) -> bool:
        """Apply one record; False when it was older than what we have (drop it)."""
        subject = key.decode()
        if value is None:
            self.states.pop(subject, None)
            return True
        data = read(key, value, headers).get_data()
        known = self.states.get(subject)
        if known is not None and known["version"] >= data["version"]:
            return False
        self.states[subject] = data
        return True


# doc:end
