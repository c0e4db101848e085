"""The CloudEvents 1.0 envelope shared by every event type."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

PERSONAL: JsonDict = {"x-personal": True}
"""Marks a field that holds personal data (log scrubbing, export and erasure use the mark)."""


class Data(BaseModel):
    """Base of every event's `data`: frozen, and unknown fields are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")


DataT = TypeVar("DataT", bound=Data)


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 event in structured JSON mode; `subject` is the Kafka key."""

    model_config = ConfigDict(frozen=True, extra="allow")

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
    datacontenttype: str = "application/json"
    dataschema: str | None = None
    data: DataT

    @property
    def key(self) -> str:
        """The idempotency key: CloudEvents makes `source` + `id` unique."""
        return f"{self.source}\x1f{self.id}"

    def extensions(self) -> dict[str, Any]:
        """CloudEvents extension attributes this model does not name."""
        return dict(self.model_extra or {})
