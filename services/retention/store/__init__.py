"""PostgreSQL access for retention, a module per group of tables.

SQL statements are named constants with `$n` parameters beside the function using them; every
function takes the caller's connection, so the caller owns the transaction.
"""

from services.retention.store import (
    accounts,
    certificates,
    consent,
    disclosures,
    holds,
    jobs,
    purges,
    requests,
    restrictions,
    rules,
    timers,
)

__all__ = [
    "accounts",
    "certificates",
    "consent",
    "disclosures",
    "holds",
    "jobs",
    "purges",
    "requests",
    "restrictions",
    "rules",
    "timers",
]
