"""Kafka encode/decode of contract events, built on the CloudEvents SDK and its Kafka binding.

We publish structured mode only (`kafka_headers`); `decode_kafka` reads either content mode.
Decoding takes a fast path for a plain structured 1.0 envelope (orjson, then the contract's
pydantic validation straight away); anything unusual goes through the SDK, so the accepted
events and the error reasons are the same either way. A binary-mode record is turned into the
envelope it stands for and takes the same path. Encoding always uses the SDK.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from cloudevents.exceptions import DataUnmarshallerError
from cloudevents.exceptions import GenericException as CloudEventsError
from cloudevents.http import CloudEvent as SdkCloudEvent
from cloudevents.kafka import KafkaMessage, from_structured, to_structured
from pydantic import BaseModel, ValidationError

from .envelope import MAX_EVENT_BYTES, SIZE_ERRORS, CloudEvent, Data
from .events import EVENT_TYPES, AnyEvent

E = TypeVar("E", bound=CloudEvent[Any])
TYPE_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,5}\.v[0-9]{1,3}")


DecodeKind = Literal["undecodable", "invalid", "unknown_type", "too_large"]
"""What kind of refusal a DecodeError is: a bounded label, where `reason` is free text."""


class DecodeError(ValueError):
    """The bytes are not a valid v1 event; `reason` says why in one line, `kind` in one word."""

    def __init__(self, reason: str, kind: DecodeKind = "undecodable") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: DecodeKind = kind


def new_event(
    model: type[E], *, subject: str, data: Data, source: str, time: datetime | None = None
) -> E:
    """A new event of `model` with a fresh id."""
    return model(  # type: ignore[call-arg]  # `type` has its default per model
        id=str(uuid.uuid4()),
        source=source,
        subject=subject,
        time=time or datetime.now(UTC),
        data=data,
    )


def encode(event: CloudEvent[Any]) -> tuple[bytes, bytes]:
    """The Kafka (key, value) of an event: key is the subject, value structured JSON."""
    attributes: dict[str, Any] = event.model_dump(mode="json", exclude={"data"}, exclude_none=True)
    data = event.data.model_dump(mode="json", exclude_none=True)
    message = to_structured(
        SdkCloudEvent(attributes, data),
        envelope_marshaller=orjson.dumps,
        key_mapper=lambda _: event.subject,
    )
    key = message.key.encode() if isinstance(message.key, str) else message.key
    value = message.value if isinstance(message.value, bytes) else message.value.encode()
    return key or b"", value


def event_time(value: datetime) -> str:
    """A CloudEvents `time` in UTC with a `Z`, as `encode` writes it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_envelope(
    *,
    event_id: str,
    source: str,
    event_type: str,
    subject: str,
    time: str,
    data: dict[str, Any],
    extensions: Mapping[str, str] | None = None,
) -> bytes:
    """A structured-mode event straight from plain values, for hot paths that skip the model.

    `data` must be what the model's `data` dumps to (JSON mode, no None values); the services'
    unit tests pin each caller's output to `encode` of the equivalent model. `extensions` are
    extension attributes (e.g. `traceparent`), placed where `encode` puts them.
    """
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
    }
    if extensions:
        envelope.update(extensions)
    envelope["data"] = data
    return orjson.dumps(envelope)


STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
"""The `content-type` of a structured-mode record (the CloudEvents Kafka protocol binding)."""
_HEADERS = {"content-type": STRUCTURED_CONTENT_TYPE}

Headers = Sequence[tuple[str, bytes | None]]
"""Kafka record headers as clients give them (aiokafka's `ConsumerRecord.headers`)."""


def kafka_headers() -> dict[str, str]:
    """The headers of every event record we publish: structured mode, and no `ce_` header.

    A receiver that finds a `ce_` header reads the record as binary mode (the SDKs do), so
    nothing of ours may start with it. One shared dict: the outbox packs it once; never mutate.
    """
    return _HEADERS


def decode(value: bytes | None) -> AnyEvent:
    """Parse and validate one structured-mode Kafka value; raise DecodeError with a clear reason."""
    if value is None:
        raise DecodeError("empty value (tombstone) where an event was expected", "undecodable")
    return _validated(_plain_envelope(value) or _sdk_attributes(value))


def decode_kafka(
    value: bytes | None, headers: Headers = (), max_bytes: int = MAX_EVENT_BYTES
) -> AnyEvent:
    """Parse and validate one Kafka record of either content mode; DecodeError as `decode`.

    Binary mode (attributes in `ce_*` headers, the data as the value) when it has a
    `ce_specversion` header and its `content-type` is not `application/cloudevents…`;
    structured mode otherwise, as the Java SDK decides. Both give the same event.
    A record whose value and headers exceed `max_bytes` is refused (`too_large`) unparsed.
    """
    size = record_size(value, headers)
    if size > max_bytes:
        raise DecodeError(f"event of {size} bytes, over the limit of {max_bytes}", "too_large")
    if not headers or not _is_binary(headers):
        try:
            return decode(value)
        except DecodeError as exc:
            if exc.kind == "undecodable" and value is not None and _has_attribute_headers(headers):
                reason = "ce_* headers without ce_specversion, and the value is no structured event"
                raise DecodeError(reason, "undecodable") from exc
            raise
    structure = _binary_envelope(value, headers)
    return _validated(_plain_structure(structure) or _sdk_attributes(b"", structure))


def record_size(value: bytes | None, headers: Headers = ()) -> int:
    """Bytes of a record's value and headers (names and values): the encoded event's size."""
    return len(value or b"") + sum(len(name) + len(raw or b"") for name, raw in headers)


def _validated(attributes: dict[str, Any]) -> AnyEvent:
    """The contract event of `attributes` (envelope and `data`); DecodeError if it is none."""
    event_type = attributes.get("type")
    # a dict is unhashable: look up strings only
    model = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        named = isinstance(event_type, str) and TYPE_NAME.fullmatch(event_type)
        # Reasons are logged: echo the type only when it looks like a type name, never
        # whatever a producer put there (it may be personal data).
        raise DecodeError(
            f"unknown event type {event_type!r}"
            if named
            else "unknown event type (not a type name)",
            "unknown_type",
        )
    try:
        # The union's member for this type, directly: what ANY_EVENT would pick by the `type`
        # tag, without the tag's dispatch (its errors lack the tag, which the summary drops).
        event: AnyEvent = model.__pydantic_validator__.validate_python(attributes)
    except ValidationError as exc:
        # Any field over its size bound makes the refusal `too_large`: one reason to look up.
        oversize = any(error["type"] in SIZE_ERRORS for error in exc.errors())
        kind: DecodeKind = "too_large" if oversize else "invalid"
        summary = _validation_summary(exc)
        raise DecodeError(f"{kind.replace('_', ' ')} {event_type}: {summary}", kind) from exc
    return event


PARTITIONKEY = "partitionkey"
"""The extension the SDKs key a record by when no key mapper is given."""
TRACING = ("traceparent", "tracestate")
"""The distributed-tracing extension: where an event was seen, not what it says."""
_STRUCTURED = b"application/cloudevents"
_JSON = re.compile(r"(application|text)/([a-z0-9.+-]+\+)?json\s*(;.*)?", re.IGNORECASE)
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,20}")


def _is_binary(headers: Headers) -> bool:
    """Whether a record is binary mode: a `ce_specversion` header, no structured content-type."""
    binary = False
    for name, raw in headers:
        lower = name.lower()
        if lower == "content-type" and raw is not None and raw.lower().startswith(_STRUCTURED):
            return False
        binary = binary or lower == "ce_specversion"
    return binary


def _has_attribute_headers(headers: Headers) -> bool:
    """Any `ce_*` header but `ce_type` (the hint our records carried before structured mode)."""
    return any(n.lower().startswith("ce_") and n.lower() != "ce_type" for n, _ in headers)


def _binary_envelope(value: bytes | None, headers: Headers) -> dict[str, Any]:
    """The structured envelope a binary-mode record stands for; DecodeError if it has none."""
    structure: dict[str, Any] = {}
    for name, raw in headers:
        lower = name.lower()
        if lower.startswith("ce_"):
            attribute = lower[3:]
        elif lower == "content-type":
            attribute = "datacontenttype"
        else:
            continue  # not a CloudEvents attribute (tracing, the producer's own)
        shown = f"ce_{attribute}" if _ATTRIBUTE_NAME.fullmatch(attribute) else "a ce_* header"
        if attribute in ("data", "data_base64", "") or attribute in structure:
            raise DecodeError(f"binary mode: {shown} is not a single attribute header", "invalid")
        try:
            structure[attribute] = (raw or b"").decode()
        except UnicodeDecodeError:
            raise DecodeError(f"binary mode: {shown} is not UTF-8", "undecodable") from None
    if value is not None:
        content_type = structure.get("datacontenttype")
        if content_type is not None and not _JSON.fullmatch(content_type):
            reason = "binary mode: datacontenttype must be JSON (application/json)"
            raise DecodeError(reason, "invalid")
        try:
            structure["data"] = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            reason = f"binary mode: the value is not JSON data: {_short(exc)}"
            raise DecodeError(reason, "undecodable") from exc
    return structure


def _plain_envelope(value: bytes) -> dict[str, Any] | None:
    """The attributes (and `data`) of a plain structured 1.0 envelope, or None to ask the SDK."""
    try:
        structure = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return _plain_structure(structure)


def _plain_structure(structure: Any) -> dict[str, Any] | None:
    """`structure` if it is a plain 1.0 envelope (with `data` filled), else None.

    The consumer's hot path. It takes only what the SDK would pass through unchanged (a JSON
    object, lower-case names, no `data_base64`, specversion 1.0, id, source, type and time all
    present), so the result is the same; anything else takes the SDK path and its errors.
    """
    if (
        type(structure) is not dict
        or structure.get("specversion") != "1.0"
        or structure.get("id") is None
        or structure.get("time") is None
        or "source" not in structure
        or "type" not in structure
        or "data_base64" in structure
    ):
        return None
    names = "".join(structure)
    if names != names.lower():  # the SDK lower-cases attribute names
        return None
    if "data" not in structure:
        structure["data"] = None
    return structure


def _sdk_attributes(value: bytes, structure: dict[str, Any] | None = None) -> dict[str, Any]:
    """The attributes (and `data`) as the CloudEvents SDK reads them; DecodeError if invalid.

    It parses `value`, or takes the envelope `structure` already made (binary mode).
    """
    envelopes: list[Any] = []

    def unmarshal(raw: bytes) -> Any:
        envelopes.append(orjson.loads(raw) if structure is None else structure)
        return envelopes[-1]

    try:
        sdk_event = from_structured(
            KafkaMessage(headers={}, key=None, value=value), envelope_unmarshaller=unmarshal
        )
    except Exception as exc:  # the SDK raises several unrelated types for bad input
        mode = "structured JSON" if structure is None else "binary-mode"
        reason = f"not a CloudEvents {mode} event: {_short(exc)}"
        raise DecodeError(reason, "undecodable") from exc
    # The SDK fills a missing id (random) and time (now): an id-less record would then be a
    # new event at every redelivery, and a time-less one would pass for the newest.
    missing = [name for name in ("id", "time") if envelopes[0].get(name) is None]
    if missing:
        raise DecodeError(f"missing required attribute(s): {', '.join(missing)}", "invalid")
    attributes = dict(sdk_event.get_attributes())
    attributes["data"] = sdk_event.get_data()
    return attributes


def canonical(event: BaseModel) -> bytes:
    """A stable byte form of an event's content, for conflict detection.

    The same in either content mode: `partitionkey` (the binding's record key, a header in one
    SDK's binary mode and absent in another's) is left out, and extension values are compared
    as the strings a binary-mode header carries. The tracing extension is left out too: an
    event re-sent in another trace (a replay, a retry) is still the same event.
    """
    dumped = event.model_dump(mode="json")
    if event.model_extra:
        dumped.pop(PARTITIONKEY, None)
        for name in TRACING:
            dumped.pop(name, None)
        for name in event.model_extra:
            if name in dumped:
                dumped[name] = _attribute_text(dumped[name])
    return orjson.dumps(dumped, option=orjson.OPT_SORT_KEYS)


def _attribute_text(value: Any) -> Any:
    """A scalar extension value as a binary-mode header writes it (CloudEvents' string forms)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        loc = error["loc"][1:] if error["loc"] and error["loc"][0] in EVENT_TYPES else error["loc"]
        location = ".".join(str(p) for p in loc)
        parts.append(f"{location}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _short(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, CloudEventsError) and not isinstance(exc, DataUnmarshallerError):
        text = text.split(":", 1)[0]  # the SDK quotes the offending value after the colon
    return f"{type(exc).__name__}: {text}"[:300]
