"""The API tests' view of a real ``recon serve`` (``recon_service.local_server.LocalServer``) on a free loopback
port, and the tiny input files they send."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import httpx
import numpy as np

from recon_service.local_server import LocalServer

# token -> scopes; names in the service are static-1, static-2, ... in this order
TOKENS = {"submit-token": "jobs:submit,jobs:read", "read-token": "jobs:read", "review-token": "review",
          "admin-token": "admin"}
TOKEN_NAMES = {token: f"static-{n}" for n, token in enumerate(TOKENS, start=1)}
TOKEN_SETTING = ";".join(f"{t}:{s}" for t, s in TOKENS.items())


@dataclass
class Server:
    """A running ``LocalServer`` with the test tokens: plain httpx clients per token, its log, its uploads."""

    local: LocalServer

    @property
    def url(self) -> str:
        return self.local.url

    @property
    def data_dir(self) -> Path:
        return self.local.data_dir

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def log(self) -> str:
        return self.local.log_path.read_text(errors="replace")

    def uploads(self) -> set[str]:
        """Everything under DATA_DIR/uploads, as relative paths (temp files included)."""
        root = self.data_dir / "uploads"
        return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


@contextlib.contextmanager
def run_server(tmp: Path, **settings: str) -> Iterator[Server]:
    """Start ``recon serve`` with DATA_DIR ``tmp/data`` and the test tokens; ``settings`` are extra RECON_*
    (``workers="2"`` -> RECON_WORKERS=2). Yields once /healthz answers, before warm-up has finished."""
    env = {"OMP_NUM_THREADS": "1", **{f"RECON_{k.upper()}": v for k, v in settings.items()}}
    local = LocalServer(tmp / "data", tokens=TOKEN_SETTING, env=env, ready_timeout=90)
    local.start(wait=False)
    try:
        local.wait_healthy()
        yield Server(local)
    finally:
        local.stop(timeout=20)


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
