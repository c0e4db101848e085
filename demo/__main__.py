"""`python -m demo` (`make demo`): run the scenario against the stack `make run` started.

Finds the stack as deploy/local/run leaves it: `.local/env` (Kafka), `.local/api-token`, and
the services on 127.0.0.1:8001 (consent), 8002 (retention), 8003 (export); `PP_LOCAL_DIR` and
`PP_CONSENT_PORT` / `PP_RETENTION_PORT` / `PP_EXPORT_PORT` move them as they move the stack.
The simulated owners read privacy.jobs as consumer group `privacy-plane-demo-owners`.
Exit codes: 0 passed, 1 an outcome did not show up in time (or a service failed), 2 no stack.
"""

from __future__ import annotations

import asyncio
import sys

import httpx
from aiokafka.errors import KafkaError

from demo.config import SetupError, from_local
from demo.narrate import Narrator, short
from demo.scenario import DemoFailed, DemoResult, run_scenario


def summary(result: DemoResult) -> str:
    """The one-line summary of a successful run."""
    return (
        f"Demo passed in {result.seconds:.1f} s: {short(result.subject)} signed up, opted out "
        f"(deletion certified), sent GPC ({len(result.gpc_withdrawn)} purposes withdrawn), "
        f"exported {len(result.manifest.get('files', []))} files, closed the account "
        f"({len(result.schedule)} categories scheduled), was erased after a legal hold "
        f"({len(result.released_jobs)} jobs); {result.jobs_answered} owner answers."
    )


def main() -> int:
    say = Narrator()
    try:
        config = from_local()
        result = asyncio.run(run_scenario(config, say))
    except SetupError as exc:
        say.failure(str(exc))
        return 2
    except DemoFailed as exc:
        say.failure(str(exc))
        say.summary("Demo FAILED (see above): the stack's logs are in .local/logs/", ok=False)
        return 1
    except (httpx.HTTPError, KafkaError) as exc:
        say.failure(f"{type(exc).__name__}: {exc}")
        say.summary("Demo FAILED: a service or Kafka answered with an error", ok=False)
        return 1
    except KeyboardInterrupt:
        say.failure("interrupted")
        return 130
    say.summary(summary(result), ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
