"""Coil sensitivity estimation from the autocalibration (ACS) region of k-space.

Both estimators return maps ``S`` of shape (C, H, W), complex64, normalised so that
``sum_c |S_c|^2 = 1`` inside the object and ``S = 0`` outside it.

* ``acs_maps``: low-resolution coil images from the windowed ACS block divided by their
  root-sum-of-squares. One FFT per coil: fast, slightly smoother than ESPIRiT at edges.
* ``espirit_maps``: ESPIRiT (Uecker et al. 2014) through ``sigpy.mri.app.EspiritCalib``: the
  eigenvector of the calibration-matrix kernel operator with eigenvalue ~1 at each pixel.
"""

from __future__ import annotations

import numpy as np
import torch

from models.physics.mri.fft import ifft2c

MAP_METHODS = ("acs", "espirit")


def _normalise(maps: np.ndarray, support: np.ndarray) -> np.ndarray:
    norm = np.sqrt((np.abs(maps) ** 2).sum(axis=0))
    out = np.where(support & (norm > 0), maps / np.maximum(norm, 1e-12), 0)
    return out.astype(np.complex64)


def _check_kspace(kspace: np.ndarray) -> None:
    if kspace.ndim != 3:
        raise ValueError(f"coil k-space must have shape (coils, H, W), got {kspace.shape}")
    if not np.all(np.isfinite(kspace)):
        raise ValueError("coil k-space contains non-finite values")


def acs_maps(kspace: np.ndarray, num_low: int, threshold: float = 0.05,
             calib_rows: int | None = None) -> np.ndarray:
    """Sensitivity maps from the central ``num_low`` columns (and ``calib_rows`` rows, default all).

    A Hann window over the calibration block suppresses ringing in the low-resolution coil images;
    pixels whose RSS is below ``threshold`` times its maximum are treated as outside the object.
    """
    _check_kspace(kspace)
    c, h, w = kspace.shape
    if num_low < 2:
        raise ValueError(f"need at least 2 calibration lines for ACS maps, got {num_low}")
    cols = slice((w - num_low + 1) // 2, (w - num_low + 1) // 2 + num_low)
    rows_n = h if calib_rows is None else min(calib_rows, h)
    rows = slice((h - rows_n + 1) // 2, (h - rows_n + 1) // 2 + rows_n)
    window = np.outer(np.hanning(rows_n + 2)[1:-1], np.hanning(num_low + 2)[1:-1]).astype(np.float32)
    calib = np.zeros_like(kspace, dtype=np.complex64)
    calib[:, rows, cols] = kspace[:, rows, cols] * window
    low = ifft2c(torch.from_numpy(calib)).numpy()
    rss = np.sqrt((np.abs(low) ** 2).sum(axis=0))
    support = rss > threshold * rss.max()
    return _normalise(low, support)


def espirit_maps(kspace: np.ndarray, num_low: int, kernel_width: int = 6, threshold: float = 0.02,
                 crop: float = 0.95) -> np.ndarray:
    """ESPIRiT maps (sigpy) from a ``num_low`` x ``num_low`` calibration square."""
    import sigpy.mri

    _check_kspace(kspace)
    if num_low <= kernel_width:
        raise ValueError(f"ESPIRiT needs more calibration lines ({num_low}) than its kernel width "
                         f"({kernel_width})")
    maps = sigpy.mri.app.EspiritCalib(kspace.astype(np.complex64), calib_width=num_low, thresh=threshold,
                                      kernel_width=kernel_width, crop=crop, show_pbar=False).run()
    maps = np.asarray(maps)
    support = (np.abs(maps) ** 2).sum(axis=0) > 0
    return _normalise(maps, support)


def estimate_maps(kspace: np.ndarray, num_low: int, method: str = "acs") -> np.ndarray:
    """Sensitivity maps by ``method`` (``acs`` or ``espirit``)."""
    if method == "acs":
        return acs_maps(kspace, num_low)
    if method == "espirit":
        return espirit_maps(kspace, num_low)
    raise ValueError(f"unknown sensitivity method {method!r}; choose one of {', '.join(MAP_METHODS)}")
