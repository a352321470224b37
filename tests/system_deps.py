"""System tools the tests need. A missing one fails the test with the install hint: never a skip, so a
machine without them cannot pass ``make test`` by testing less."""

from __future__ import annotations

import pytest

from pipelines.data import InputError
from pipelines.system_tools import find_tool, install_hint

__all__ = ["install_hint", "require_tool"]


def require_tool(tool: str, package: str) -> str:
    """The path of ``tool`` on PATH; fails the calling test when it is not there."""
    try:
        return find_tool(tool, package)
    except InputError as err:
        pytest.fail(f"{tool} {err.problem}", pytrace=False)
