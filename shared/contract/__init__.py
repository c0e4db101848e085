"""Privacy Plane's public event contract (v1): CloudEvents envelopes and their data models.

The services import it as `shared.contract`; other teams install the same files as the
`privacy-plane-contract` distribution and import `privacy_plane.contract` (contract/README.md).
Imports inside this package are relative so that both names work.
"""

from .codec import DecodeError, decode, encode, new_event
from .envelope import CloudEvent
from .events import (
    EVENT_TYPES,
    AnyEvent,
    personal_fields,
)
from .topics import Topics

__version__ = "1.3.0"
"""The contract's version: the package, the AsyncAPI documents and the JSON Schemas carry it.

contract/hatch_build.py reads it from this line; contract/CHANGELOG.md says what each one changed.
"""

__all__ = [
    "EVENT_TYPES",
    "AnyEvent",
    "CloudEvent",
    "DecodeError",
    "Topics",
    "__version__",
    "decode",
    "encode",
    "new_event",
    "personal_fields",
]
