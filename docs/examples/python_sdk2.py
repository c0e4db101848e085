"""Privacy Plane events with the CloudEvents Python SDK 2.x (`pip install "cloudevents>=2,<3"`).

docs/integrating.md shows these functions; tests/integration/interop runs this very file, in a
virtualenv of its own, against the services on real Kafka.
"""

from __future__ import annotations

from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


# doc:begin sdk2-publish
def new_event(event_type: str, subject: str, data: dict[str, Any], source: str) -> CloudEvent:
    """A Privacy Plane event (SDK 2.x fills `id` and `time`); `subject` is the Kafka key."""
    attributes = {"type": event_type, "source": source, "subject": subject}
    return CloudEvent(attributes, data)


def by_subject(event: BaseCloudEvent) -> str | None:
    """The Kafka key: always the event's subject (without a key mapper SDK 2.x uses
    `partitionkey`, and no key at all when that is absent)."""
    return event.get_subject()


def structured(event: CloudEvent) -> KafkaMessage:
    """Structured mode: `content-type: application/cloudevents+json`, the event as the value."""
    return to_structured(event, JSONFormat(), key_mapper=by_subject)


def binary(event: CloudEvent) -> KafkaMessage:
    """Binary mode: attributes in `ce_*` headers, the data as the value."""
    return to_binary(event, JSONFormat(), key_mapper=by_subject)


# Send `message.key`, `message.value` and `message.headers` (a dict of bytes) with your client.
# doc:end


# doc:begin sdk2-read
def read(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> BaseCloudEvent:
    """A consumed record as a CloudEvent: `from_kafka` tells the content mode by the headers."""
    return from_kafka(KafkaMessage(headers=dict(headers), key=key, value=value), JSONFormat())


# doc:end
