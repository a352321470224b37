"""Finding the system programs (Debian packages) that the simulators, benchmarks and tests run, with one install
hint for all of them."""

from __future__ import annotations

import shutil

from pipelines.data import InputError

INSTALL = "bash scripts/install-system-deps.sh"


def install_hint(package: str) -> str:
    return f"install the Debian package {package} ({INSTALL} installs every system package the project uses)"


def find_tool(name: str, package: str) -> str:
    """The path of the program ``name`` on PATH; ``InputError`` naming the Debian ``package`` that has it."""
    path = shutil.which(name)
    if path is None:
        raise InputError(name, f"not found on PATH: {install_hint(package)}")
    return path
