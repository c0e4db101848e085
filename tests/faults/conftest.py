"""Fault-suite fixtures: one folder for every service log of the session, and the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.stats import STATS


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every service process of the session writes its log (the log scan reads it)."""
    return tmp_path_factory.mktemp("service-logs")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures of the fault run (independent of -s and -r)."""
    if not (STATS.events_sent or STATS.malformed_inputs or STATS.processes_killed):
        return
    terminalreporter.write_sep("=", "fault suite figures")
    for line in STATS.lines():
        terminalreporter.write_line(line)
