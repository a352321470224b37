"""Raw MRI data made by tools this project did not write, with ground truth: the check that the learned methods
know when they are out of their depth.

* **ISMRMRD's simulator** (``ismrmrd_generate_cartesian_shepp_logan``, Debian ``ismrmrd-tools``): a Shepp-Logan
  phantom, its own coil maps, 2x readout oversampling, an equispaced mask of its own (every ``R``-th line plus
  calibration lines) and complex noise. The reference is the RSS of the same phantom generated noise-free and fully
  sampled (the generator is deterministic apart from its noise).
* **BART** (Debian ``bart``): ``bart phantom -k`` (analytic k-space of a Shepp-Logan phantom with BART's coil
  sensitivities) undersampled by a variable-density Poisson-disc column pattern of ``bart poisson`` (the centre
  row of a 2D pattern with its calibration block), a mask no model trained on; complex noise added at
  ``snr_db``. The reference is the RSS of the noise-free, fully sampled coil images.

Both come back as ``MRIAcquisition`` with ``reference`` set, read by the project's own readers (ISMRMRD) or through
``pipelines.io.bart_cfl``. A missing tool raises ``InputError`` naming the package.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from models.physics.mri.coils import rss
from models.physics.mri.fft import ifft2c
from models.physics.mri.masks import count_center_lines
from pipelines.data import InputError, MRIAcquisition
from pipelines.system_tools import find_tool

ISMRMRD_GENERATOR = "ismrmrd_generate_cartesian_shepp_logan"

def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise InputError(command[0], f"failed ({' '.join(command[1:])}): {done.stderr.strip()[:400]}")


def _rss_reference(kspace: np.ndarray) -> np.ndarray:
    return rss(ifft2c(torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64)))).numpy()


def ismrmrd_shepp_logan(size: int = 192, coils: int = 12, acceleration: int = 4, calibration: int = 16,
                        noise: float = 0.05) -> MRIAcquisition:
    """ISMRMRD's simulated Shepp-Logan: ``size`` x ``size``, ``coils`` coils, every ``acceleration``-th line plus
    ``calibration`` centre lines, noise of standard deviation ``noise`` (the generator's ``-n``)."""
    from pipelines.io.ismrmrd_mrd import read_ismrmrd

    generator = find_tool(ISMRMRD_GENERATOR, "ismrmrd-tools")
    with tempfile.TemporaryDirectory(prefix="ismrmrd-") as tmp:
        data, clean = Path(tmp) / "data.h5", Path(tmp) / "clean.h5"
        common = ["-m", str(size), "-c", str(coils)]
        _run([generator, "-o", str(data), *common, "-a", str(acceleration), "-w", str(calibration),
              "-n", str(noise)])
        _run([generator, "-o", str(clean), *common, "-n", "0"])
        acq = read_ismrmrd(data)
        truth = read_ismrmrd(clean)
    acq.reference = _rss_reference(truth.kspace[0])[None].astype(np.float32)
    acq.attrs.update(source_tool=ISMRMRD_GENERATOR, acceleration=float(acceleration), generator_noise=noise)
    return acq


def bart_phantom(size: int = 256, coils: int = 8, acceleration: float = 4.0, calibration: int = 16,
                 snr_db: float | None = 35.0, seed: int = 0) -> MRIAcquisition:
    """BART's analytic Shepp-Logan k-space with BART's coil maps, under ``bart poisson``'s 1D variable-density
    column mask (``acceleration``, ``calibration`` centre lines; ``acceleration`` 1: fully sampled) with noise at
    ``snr_db`` (None: none) relative to the mean RSS reference over the object."""
    from pipelines.io.bart_cfl import read_cfl

    bart = find_tool("bart", "bart")
    with tempfile.TemporaryDirectory(prefix="bart-") as tmp:
        base = Path(tmp) / "phantom"
        _run([bart, "phantom", "-k", "-x", str(size), "-s", str(coils), str(base)])
        kspace = read_cfl(base).reshape(coils, size, size)  # BART (x, y, 1, coil) -> ours (coil, H=y, W=x)
        mask = np.ones(size, np.float32)
        if acceleration > 1:
            pattern = Path(tmp) / "mask"
            rows = max(calibration, 32)  # bart poisson draws 2D patterns: the centre row of one is a column mask
            _run([bart, "poisson", "-Y", str(size), "-y", f"{acceleration:g}", "-Z", str(rows), "-z", "1", "-C",
                  str(calibration), "-v", "-s", str(seed), str(pattern)])
            mask = (np.abs(read_cfl(pattern)).reshape(rows, size)[rows // 2] > 0).astype(np.float32)
    kspace = kspace.astype(np.complex64)
    reference = _rss_reference(kspace)
    sigma = 0.0
    if snr_db is not None:
        obj = reference > 0.1 * reference.max()
        sigma = float(reference[obj].mean()) / 10 ** (snr_db / 20)
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)
        kspace = (kspace + sigma / np.sqrt(2) * noise).astype(np.complex64)
    kspace = kspace * mask[None, None, :]
    return MRIAcquisition(
        kspace=kspace[None], mask=mask[None], num_low_frequencies=count_center_lines(mask), recon_shape=(size, size),
        reference=reference[None].astype(np.float32), affine=np.diag([1.0, 1.0, 1.0, 1.0]),
        attrs={"source_tool": "bart phantom -k / bart poisson -v", "acceleration": float(acceleration),
               "snr_db": snr_db, "noise_sigma": sigma, "mask_kind": "bart-poisson-1d" if acceleration > 1 else "none"},
        source=f"bart:phantom:{size}:{coils}:{acceleration:g}x")


def benchmark_cases() -> dict[str, MRIAcquisition]:
    """The phantom set of the benchmarks (``benchmarks/mri_ood_calibrate.py``, ``benchmarks/mri_consistency.py``)."""
    return {"ismrmrd-192-12c-equispaced-4x": ismrmrd_shepp_logan(192, 12, 4, 16, 0.05),
            "bart-256-8c-poisson-4x": bart_phantom(256, 8, 4.0, 16, 35.0, seed=1),
            "bart-256-8c-poisson-8x": bart_phantom(256, 8, 8.0, 16, 35.0, seed=2),
            "bart-256-8c-full": bart_phantom(256, 8, 1.0, 16, 35.0, seed=3)}
