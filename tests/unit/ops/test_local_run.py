"""deploy/local/run: the Docker-free stack script (its start up to the services runs in
tests/integration/test_local_run_script.py; with the services, in `make run`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RUN = ROOT / "deploy" / "local" / "run"


def test_script_parses_and_is_executable() -> None:
    assert RUN.stat().st_mode & 0o111
    result = subprocess.run(["bash", "-n", str(RUN)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_help_describes_the_commands_without_starting_anything() -> None:
    result = subprocess.run([str(RUN), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for word in ("--detach", "stop", "status", "8001", "api-token"):
        assert word in result.stdout


def test_an_unknown_command_fails_with_a_message() -> None:
    result = subprocess.run([str(RUN), "launch"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "unknown command 'launch'" in result.stderr
