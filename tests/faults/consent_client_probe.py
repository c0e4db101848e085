"""A consent client in a process of its own, which the fault suite can pause (SIGSTOP).

    python -m tests.faults.consent_client_probe BOOTSTRAP TOPIC RETENTION_S REPORT SUBJECT...

Once caught up it writes, ten times a second, which of the SUBJECTs its cache holds and how
many reloads it made to the JSON file REPORT (replaced atomically).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
from prometheus_client import REGISTRY

from shared.consent_client import ConsentClient


async def main(argv: list[str]) -> None:
    """Follow the topic and report until killed."""
    bootstrap, topic, retention, report, *subjects = argv
    client = ConsentClient(bootstrap, topic, tombstone_retention=float(retention))
    await client.start()
    await client.wait_until_caught_up()
    out, scratch = Path(report), Path(report + ".tmp")
    while True:
        reloads = REGISTRY.get_sample_value("pp_consent_client_reloads_total") or 0
        known = [s for s in subjects if s in client.cache]
        scratch.write_bytes(orjson.dumps({"known": known, "reloads": int(reloads)}))
        scratch.replace(out)
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
