"""`python -m demo` (`make demo`): run the scenario against the stack `make run` started."""

from __future__ import annotations

import asyncio
import sys

from demo.config import SetupError, from_local
from demo.narrate import Narrator, short
from demo.scenario import DemoFailed, DemoResult, run_scenario


def summary(result: DemoResult) -> str:
    """The one-line summary of a successful run."""
    files = len(result.manifest.get("files", []))
    return (
        f"Demo passed in {result.seconds:.1f} s: person {short(result.subject)} signed up, "
        f"opted out (deletion certified), sent GPC ({len(result.gpc_withdrawn)} purposes "
        f"withdrawn), exported {files} files, closed the account ({len(result.schedule)} "
        f"categories scheduled) and was erased after a hold ({len(result.released_jobs)} jobs); "
        f"{result.jobs_answered} answers from the simulated owners."
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
    except KeyboardInterrupt:
        say.failure("interrupted")
        return 130
    say.summary(summary(result), ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
