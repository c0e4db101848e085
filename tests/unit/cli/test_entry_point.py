"""The console script without the `services` extra: one line naming the extra, exit 2."""

from __future__ import annotations

import importlib
import sys

import pytest

import shared


@pytest.fixture
def fresh_cli(monkeypatch):
    """Forget the imported CLI modules (restored afterwards) so the next import runs anew."""
    monkeypatch.setattr(shared, "cli", sys.modules.get("shared.cli"), raising=False)
    for name in [n for n in sys.modules if n == "shared.cli" or n.startswith("shared.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "argv", ["privacy-plane", "--help"])


@pytest.mark.parametrize("missing", ["httpx", "typer"])
def test_a_missing_cli_dependency_prints_the_extra_to_install(
    fresh_cli, monkeypatch, capsys, missing
):
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` now raises ImportError
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module("shared.cli").main()
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "pip install 'privacy-plane[services]'" in lines[0]
    assert missing in lines[0]


def test_a_missing_module_of_our_own_is_not_disguised_as_a_missing_extra(fresh_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "shared.cli.dlq", None)
    with pytest.raises(ImportError, match=r"shared\.cli\.dlq"):
        importlib.import_module("shared.cli").main()


def test_with_the_extra_installed_the_commands_run(fresh_cli, capsys):
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module("shared.cli").main()
    assert exit_.value.code == 0
    assert "verify-ledger" in capsys.readouterr().out


def test_the_typer_app_is_still_importable_from_the_package():
    from shared.cli import app
    from shared.cli.commands import app as commands_app

    assert app is commands_app
