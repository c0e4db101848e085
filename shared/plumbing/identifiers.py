"""The one check for names that are formatted into SQL (schemas, roles): settings and tools use it.

SQL parameters cannot name a schema or a role, so such a name is formatted into the statement;
it must then be one of ours: lower-case letters, digits and underscores, starting with a letter
or underscore, at most 63 bytes (PostgreSQL's limit), and it is always double-quoted.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
_NAME = re.compile(PATTERN)


class InvalidIdentifier(ValueError):
    """A schema or role name that may not be formatted into SQL."""


def checked(name: str, what: str = "schema name") -> str:
    """`name` itself, or InvalidIdentifier saying what a valid one looks like."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidIdentifier(
            f"invalid {what} {name!r}: use lower-case letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters"
        )
    return name


def quoted(name: str, what: str = "schema name") -> str:
    """`name` checked and double-quoted, ready to be formatted into a statement."""
    return f'"{checked(name, what)}"'


SchemaName = Annotated[str, AfterValidator(checked)]
"""A settings field holding a schema name (validated by `checked`)."""
