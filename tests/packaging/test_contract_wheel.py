"""The contract wheel, installed alone into a fresh virtualenv, is what other teams need.

Builds `privacy-plane-contract` from contract/ (pip, isolated build), installs it into a new
virtualenv without the services' dependencies, and runs tests/packaging/in_venv.py there with
an example of every v1 event type. The build and the venv are made once per session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.contract import __version__
from shared.contract.events import EVENT_TYPES
from tests.packaging.examples import EXAMPLES

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
IN_VENV = Path(__file__).with_name("in_venv.py")
PIP = (sys.executable, "-m", "pip")
CONTRACT_DEPENDENCIES = {"pydantic", "cloudevents", "orjson", "pynacl"}


def _run(*args: str | Path, cwd: Path) -> str:
    """Run a command away from the repository (no PYTHONPATH), failing with its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contract wheel, built from contract/ as pip builds it (isolated, hatchling from PyPI)."""
    out = tmp_path_factory.mktemp("contract-dist")
    _run(*PIP, "wheel", "-q", "--no-deps", "-w", out, ROOT / "contract", cwd=out)
    (built,) = out.glob("privacy_plane_contract-*.whl")
    return built


@pytest.fixture(scope="session")
def report(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What in_venv.py saw in a fresh virtualenv holding the wheel and its four dependencies."""
    work = tmp_path_factory.mktemp("contract-venv")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    # This environment's pip installs into the new one: no ensurepip, quicker.
    _run(*PIP, "--python", python, "install", "-q", wheel, cwd=work)
    given = work / "given.json"
    given.write_text(json.dumps({"examples": EXAMPLES}))
    seen: dict[str, Any] = json.loads(_run(python, "-I", IN_VENV, given, cwd=work))  # -I: no cwd
    return seen


def test_the_examples_cover_every_v1_type():
    assert set(EXAMPLES) == set(EVENT_TYPES)


def test_the_wheel_is_the_contract_version(wheel, report):
    assert wheel.name == f"privacy_plane_contract-{__version__}-py3-none-any.whl"
    assert report["version"] == report["distribution_version"] == __version__
    assert report["types"] == sorted(EVENT_TYPES)


def test_it_depends_on_the_four_libraries_the_contract_imports(report):
    base = {r.split(";")[0] for r in report["requires"] if "extra ==" not in r}
    assert {re.split(r"[<>=\[ ]", r)[0].lower() for r in base} == CONTRACT_DEPENDENCIES


def test_it_installs_privacy_plane_alone_and_typed(report):
    assert report["top_level"] == [
        "privacy_plane",
        f"privacy_plane_contract-{__version__}.dist-info",
    ]
    assert report["importable"] == {"shared": False, "services": False}
    assert report["py_typed"] == {
        "privacy_plane.contract": True,
        "privacy_plane.consent_client": True,
    }


def test_every_v1_type_encodes_decodes_and_validates(report):
    assert report["round_trips"] == dict.fromkeys(EXAMPLES, "ok")
    assert report["rejected"] == dict.fromkeys(EXAMPLES, True)
    assert report["sealed_part_opens"] is True


def test_the_shipped_schemas_carry_the_contract_version(report):
    assert report["schema_versions"] == dict.fromkeys(EVENT_TYPES, __version__)


def test_the_consent_client_needs_the_client_extra(report):
    assert report["consent_client_without_extra"] in {"aiokafka", "faststream", "prometheus_client"}
