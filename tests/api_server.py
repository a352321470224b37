"""A real ``recon serve`` in a subprocess on a free loopback port, and the tiny input files the API tests send."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# token -> scopes; names in the service are static-1, static-2, ... in this order
TOKENS = {"submit-token": "jobs:submit,jobs:read", "read-token": "jobs:read", "review-token": "review",
          "admin-token": "admin"}
TOKEN_NAMES = {token: f"static-{n}" for n, token in enumerate(TOKENS, start=1)}


@dataclass
class Server:
    url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def uploads(self) -> set[str]:
        """Everything under DATA_DIR/uploads, as relative paths (temp files included)."""
        root = self.data_dir / "uploads"
        return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_server(tmp: Path, **settings: str) -> Iterator[Server]:
    """Start ``recon serve`` with DATA_DIR under ``tmp`` and the test tokens; ``settings`` are extra RECON_*."""
    data_dir = tmp / "data"
    log_path = tmp / "server.log"
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECON_DATA_DIR": str(data_dir),
           "RECON_API_TOKENS": ";".join(f"{t}:{s}" for t, s in TOKENS.items()), "OMP_NUM_THREADS": "1",
           **{f"RECON_{k.upper()}": v for k, v in settings.items()}}
    env.pop("RECON_DATABASE_URL", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "recon_service.cli", "serve", "--host", "127.0.0.1",
                                    "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", data_dir, log_path, process)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"recon serve exited with {process.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"recon serve did not answer /healthz in 90 s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- tiny inputs

def write_fastmri_file(path: Path, seed: int = 0) -> Path:
    from pipelines.data import MRIAcquisition
    from pipelines.io.fastmri import write_fastmri

    rng = np.random.default_rng(seed)
    kspace = (rng.standard_normal((1, 2, 16, 16)) + 1j * rng.standard_normal((1, 2, 16, 16))).astype(np.complex64)
    return write_fastmri(path, MRIAcquisition(kspace=kspace))


def write_sinogram_file(path: Path) -> Path:
    from models.physics.ct import parallel_beam
    from pipelines.data import CTAcquisition
    from pipelines.io.sinogram import write_sinogram

    geom = parallel_beam(16, 6)
    sino = np.random.default_rng(1).random((1, *geom.sinogram_shape), dtype=np.float32)
    return write_sinogram(path, CTAcquisition(sinogram=sino, angles=geom.angles_array(), geometry=geom.to_dict()))


def write_unknown_hdf5(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 4, 4), np.float32))
    return path


def copy_dicom(path: Path) -> Path:
    from pydicom.data import get_testdata_file

    shutil.copyfile(get_testdata_file("MR_small.dcm"), path)
    return path
