import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def recon_command() -> list[str]:
    """The installed ``recon`` console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "recon"
    return [str(script)] if script.exists() else [sys.executable, "-m", "recon_service.cli"]


@pytest.fixture
def run_recon():
    """Run the real ``recon`` CLI in a subprocess; returns the CompletedProcess."""

    def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([*recon_command(), *args], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"recon {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run
