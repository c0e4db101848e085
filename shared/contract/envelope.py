"""The CloudEvents 1.0 envelope shared by every event type."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Self, TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

PERSONAL: JsonDict = {"x-personal": True}
"""Marks a field that holds personal data (log scrubbing, export and erasure use the mark)."""

MAX_EVENT_BYTES = 512 * 1024
"""Default bound of one encoded event (the record's value and headers), schema keyword
`x-max-event-bytes`: half of Kafka's default message size, above the largest inline export
part (256 KiB of records, sealed and in base64). Consumers take it as a setting."""
MAX_EXTRA_BYTES = 16 * 1024
"""Bound of the unknown fields one object keeps, as compact JSON (schema `x-max-extra-bytes`)."""
SIZE_ERRORS = frozenset({"string_too_long", "too_long", "too_large"})
"""pydantic error types that mean "over a size bound": the `too_large` refusal, not `invalid`."""


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (what a size bound on a free-form value counts)."""
    return len(orjson.dumps(value, default=str))


def too_large(what: str, size: int, limit: int) -> PydanticCustomError:
    """The validation error of a value over its size bound (error type `too_large`)."""
    return PydanticCustomError(
        "too_large",
        "{what} take {size} bytes, over the limit of {limit}",
        {"what": what, "size": size, "limit": limit},
    )


def _extra_bound(schema: JsonDict, cls: type[Any]) -> None:
    schema["x-max-extra-bytes"] = cls.max_extra_bytes


class Open(BaseModel):
    """A frozen object that keeps unknown fields, up to `max_extra_bytes` of them as JSON."""

    model_config = ConfigDict(frozen=True, extra="allow", json_schema_extra=_extra_bound)

    max_extra_bytes: ClassVar[int] = MAX_EXTRA_BYTES

    @model_validator(mode="after")
    def _bounded_extras(self) -> Self:
        extra = self.__pydantic_extra__
        if extra:  # the common case, no unknown field, costs one test
            size = json_size(extra)
            if size > self.max_extra_bytes:
                raise too_large("unknown fields", size, self.max_extra_bytes)
        return self


class Data(Open):
    """Base of every event's `data`: frozen, and unknown fields are kept (bounded)."""


DataT = TypeVar("DataT", bound=Data)


def _envelope_bounds(schema: JsonDict, cls: type[Any]) -> None:
    schema["x-max-extra-bytes"] = cls.max_extra_bytes
    schema["x-max-event-bytes"] = MAX_EVENT_BYTES


class CloudEvent(Open, Generic[DataT]):
    """A CloudEvents 1.0 event in structured JSON mode; `subject` is the Kafka key.

    Extension attributes are kept, up to 4 KiB of them; the whole encoded event is bounded by
    the consumer's `max_event_bytes` (default MAX_EVENT_BYTES, `codec.decode_kafka`).
    """

    model_config = ConfigDict(frozen=True, extra="allow", json_schema_extra=_envelope_bounds)

    max_extra_bytes: ClassVar[int] = 4 * 1024
    personal: ClassVar[bool] = False

    specversion: str = Field("1.0", pattern=r"^1\.0$")
    id: str = Field(min_length=1, max_length=200, description="Unique per source.")
    source: str = Field(min_length=1, max_length=500, description="Producing service.")
    type: str
    subject: str = Field(
        min_length=1,
        max_length=200,
        description="The person (or the account, for account-level events); the Kafka key.",
        examples=["usr_42"],
    )
    time: AwareDatetime = Field(description="When it happened at the source (RFC 3339).")
    datacontenttype: str = Field("application/json", max_length=200)
    dataschema: str | None = Field(None, max_length=2000)
    data: DataT

    @property
    def key(self) -> str:
        """The idempotency key: CloudEvents makes `source` + `id` unique."""
        return f"{self.source}\x1f{self.id}"

    def extensions(self) -> dict[str, Any]:
        """CloudEvents extension attributes this model does not name."""
        return dict(self.model_extra or {})
