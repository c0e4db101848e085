"""Keyset pagination for list endpoints: a bounded `limit` and an opaque `after` cursor.

A page answers with `next`, the cursor of its last item when more follow (else null); the
client passes it back as `after`. Cursors are base64url JSON of the sort key, so a client
cannot depend on their shape and a page costs an index range scan, never an OFFSET.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from fastapi import HTTPException, Query

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
T = TypeVar("T")


def limit_query(default: int = DEFAULT_LIMIT) -> Any:
    """The `limit` query parameter: 1..MAX_LIMIT (a larger one is refused with 422)."""
    return Query(
        default,
        ge=1,
        le=MAX_LIMIT,
        description=f"Page size, at most {MAX_LIMIT}; follow `next` for the rest.",
    )


def after_query() -> Any:
    """The `after` query parameter: the `next` cursor of the previous page."""
    return Query(None, max_length=512, description="The `next` cursor of the previous page.")


def encode_cursor(*key: int | str | datetime) -> str:
    """An opaque cursor for a sort key (datetimes as ISO 8601)."""
    values = [k.isoformat() if isinstance(k, datetime) else k for k in key]
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type[int] | type[str] | type[datetime]) -> tuple[Any, ...]:
    """The sort key a cursor of this endpoint carries; 422 when it is not one."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(kinds):
            raise ValueError("wrong shape")
        return tuple(_value(kind, value) for kind, value in zip(kinds, raw, strict=True))
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise HTTPException(422, "after: not a cursor this endpoint returned as `next`") from exc


def _value(kind: type[Any], value: Any) -> Any:
    if kind is datetime:
        if not isinstance(value, str):
            raise TypeError("not a date-time")
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("a cursor's date-time has its offset")
        return parsed
    if type(value) is not kind:
        raise TypeError(f"not {kind.__name__}")
    return value


def split_page(rows: Sequence[T], limit: int) -> tuple[Sequence[T], bool]:
    """A page of at most `limit` rows from `limit + 1` fetched, and whether more follow."""
    return rows[:limit], len(rows) > limit
