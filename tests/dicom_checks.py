"""dciodvfy (Debian dicom3tools) on written DICOM files, for the writer's and the service's tests."""

import subprocess
from pathlib import Path

from system_deps import require_tool

# Laterality (0020,0060) is written empty: the body part, and so whether it is paired, is unknown to the writer.
# dciodvfy warns that an empty value is only allowed when actually unknown, which is the case here.
ALLOWED_WARNING = "attribute <Laterality>"


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's Error and Warning lines for one file (it reports on stderr)."""
    dciodvfy_path = require_tool("dciodvfy", "dicom3tools")  # a failure with the install hint, never a skip
    proc = subprocess.run([dciodvfy_path, str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith(("Error", "Warning"))]


def assert_valid(paths) -> None:
    for path in paths:
        problems = dciodvfy(path)
        errors = [line for line in problems if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"
        unexpected = [line for line in problems if ALLOWED_WARNING not in line]
        assert not unexpected, f"{path.name}: {unexpected}"


def assert_no_errors(paths) -> None:
    """dciodvfy finds no errors (warnings allowed: e.g. a job without a patient ID cannot go into a DICOMDIR)."""
    for path in paths:
        errors = [line for line in dciodvfy(path) if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"
