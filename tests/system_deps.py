"""System tools the tests need. A missing one fails the test with the install hint: never a skip, so a
machine without them cannot pass ``make test`` by testing less."""

from __future__ import annotations

import shutil

import pytest

INSTALL = "bash scripts/install-system-deps.sh"


def install_hint(package: str) -> str:
    return f"install the Debian package {package} ({INSTALL} installs every system package the tests use)"


def require_tool(tool: str, package: str) -> str:
    """The path of ``tool`` on PATH; fails the calling test when it is not there."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found on PATH: {install_hint(package)}", pytrace=False)
    return path
