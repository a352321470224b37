import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP barriers stall."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
