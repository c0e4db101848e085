"""Privacy Plane's public event contract (v1): CloudEvents envelopes and their data models.

Other platform services install this package alone (the base `privacy-plane` distribution,
without extras) to produce and consume Privacy Plane events.
"""

from shared.contract.codec import DecodeError, decode, encode, new_event
from shared.contract.envelope import CloudEvent
from shared.contract.events import (
    EVENT_TYPES,
    AnyEvent,
    personal_fields,
)
from shared.contract.topics import Topics

__all__ = [
    "EVENT_TYPES",
    "AnyEvent",
    "CloudEvent",
    "DecodeError",
    "Topics",
    "decode",
    "encode",
    "new_event",
    "personal_fields",
]
