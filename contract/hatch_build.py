"""Hatchling hooks of the contract distribution: ship the services' own contract source.

From the repository the files come from `../shared/contract` (and `../shared/consent_client`),
mapped to `privacy_plane/contract` (and `privacy_plane/consent_client`); the sdist carries them
already mapped, so a wheel built from the sdist finds them at home. The version is read from
the contract's `__version__`, the one place it is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface

PACKAGES = {"contract": "shared/contract", "consent_client": "shared/consent_client"}
"""Each `privacy_plane.<name>` and the repository folder it is built from."""
LEFT_OUT = frozenset({"baseline", "__pycache__"})
"""Not shipped: the frozen v1 schemas only serve the repository's compatibility test."""
VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


def sources(root: str) -> dict[str, Path]:
    """Each package's source folder: at home in an unpacked sdist, else in the repository."""
    project = Path(root)
    found = {}
    for name, in_repository in PACKAGES.items():
        home, repository = project / "privacy_plane" / name, project.parent / in_repository
        found[name] = home if home.is_dir() else repository
        if not found[name].is_dir():
            raise FileNotFoundError(f"privacy_plane.{name}: neither {home} nor {repository}")
    return found


class ContractSource(BuildHookInterface):
    """Force-include the contract's files under `privacy_plane/` (wheel and sdist alike)."""

    PLUGIN_NAME = "contract-source"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Map every shipped file of each source folder to its place in the distribution."""
        for name, folder in sources(self.root).items():
            for entry in sorted(folder.iterdir()):
                if entry.name not in LEFT_OUT:
                    build_data["force_include"][str(entry)] = f"privacy_plane/{name}/{entry.name}"


class ContractVersion(MetadataHookInterface):
    """`project.version` is the contract's `__version__`."""

    PLUGIN_NAME = "contract-version"

    def update(self, metadata: dict[str, Any]) -> None:
        """Set the version from `privacy_plane.contract.__version__`'s source line."""
        init = sources(self.root)["contract"] / "__init__.py"
        match = VERSION.search(init.read_text(encoding="utf-8"))
        if match is None:
            raise ValueError(f'no `__version__ = "..."` line in {init}')
        metadata["version"] = match.group(1)
