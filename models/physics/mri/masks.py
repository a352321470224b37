"""Undersampling masks for Cartesian k-space, following fastMRI's mask functions.

Column masks sample whole phase-encode columns (the last axis). A fully sampled centre of
``num_low = round(W * center_fraction)`` columns is always kept; the rest are drawn so that the
expected total is ``W / acceleration``:

* random:      each outer column is kept with probability ``(W / R - num_low) / (W - num_low)``
* equispaced:  outer columns on a regular grid with spacing ``R (num_low - W) / (num_low R - W)``
               (so the total, centre included, is about ``W / R``), random offset

Poisson-disc masks sample 2D (ky, kx) points with a fully sampled calibration square (sigpy).
Every function takes a seed and is deterministic given it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASK_KINDS = ("random", "equispaced", "poisson")

# fastMRI's pairing of centre fraction and acceleration
DEFAULT_CENTER_FRACTIONS = {4: 0.08, 8: 0.04}


@dataclass(frozen=True)
class SamplingMask:
    """A mask broadcastable to (..., H, W) k-space (1 = sampled) and its calibration size."""

    mask: np.ndarray  # float32, shape (1, W) for column masks, (H, W) for 2D masks
    num_low_frequencies: int

    @property
    def acceleration(self) -> float:
        """Achieved acceleration: total samples over sampled samples."""
        return float(self.mask.size / max(self.mask.sum(), 1))


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's centre fraction for 4x and 8x; ``0.32 / R`` otherwise (same rule)."""
    return DEFAULT_CENTER_FRACTIONS.get(int(acceleration), 0.32 / acceleration)


def calibrated_center_fraction(width: int, acceleration: float, min_lines: int = 10) -> float:
    """fastMRI's centre fraction, raised so at least ``min_lines`` centre columns are kept (for coil
    calibration on small matrices), but never more than 70% of the ``width / acceleration`` sampled ones."""
    floor = min(min_lines, int(0.7 * width / acceleration))
    return max(default_center_fraction(acceleration), floor / width)


def _check(width: int, center_fraction: float, acceleration: float) -> int:
    if width < 2:
        raise ValueError(f"mask width must be at least 2, got {width}")
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if not 0 < center_fraction <= 1:
        raise ValueError(f"center fraction must be in (0, 1], got {center_fraction}")
    num_low = max(1, int(round(width * center_fraction)))
    if num_low > width / acceleration + 1e-9 and acceleration > 1:
        raise ValueError(
            f"center fraction {center_fraction} keeps {num_low} of {width} columns, more than "
            f"1/{acceleration} of them: lower the centre fraction or the acceleration")
    return num_low


def _center_slice(width: int, num_low: int) -> slice:
    start = (width - num_low + 1) // 2
    return slice(start, start + num_low)


def random_column_mask(width: int, acceleration: float, center_fraction: float | None = None,
                       seed: int = 0) -> SamplingMask:
    """fastMRI RandomMaskFunc: fully sampled centre plus random outer columns."""
    center_fraction = center_fraction or default_center_fraction(acceleration)
    num_low = _check(width, center_fraction, acceleration)
    rng = np.random.default_rng(seed)
    prob = (width / acceleration - num_low) / max(width - num_low, 1)
    mask = rng.uniform(size=width) < prob
    mask[_center_slice(width, num_low)] = True
    return SamplingMask(mask.astype(np.float32)[None, :], num_low)


def equispaced_column_mask(width: int, acceleration: float, center_fraction: float | None = None,
                           seed: int = 0) -> SamplingMask:
    """fastMRI EquispacedMaskFractionFunc: fully sampled centre plus evenly spaced outer columns."""
    center_fraction = center_fraction or default_center_fraction(acceleration)
    num_low = _check(width, center_fraction, acceleration)
    rng = np.random.default_rng(seed)
    mask = np.zeros(width, dtype=bool)
    if acceleration > 1 and num_low * acceleration < width:
        spacing = acceleration * (num_low - width) / (num_low * acceleration - width)
        offset = rng.integers(0, max(int(round(spacing)), 1))
        mask[np.round(np.arange(offset, width - 1, spacing)).astype(int)] = True
    else:
        mask[:] = acceleration <= 1
    mask[_center_slice(width, num_low)] = True
    return SamplingMask(mask.astype(np.float32)[None, :], num_low)


def poisson_disc_mask(shape: tuple[int, int], acceleration: float, calib: int = 24,
                      seed: int = 0) -> SamplingMask:
    """2D variable-density Poisson-disc mask with a fully sampled ``calib x calib`` centre (sigpy)."""
    import sigpy.mri

    h, w = shape
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if calib * calib > h * w / acceleration:
        raise ValueError(f"calibration region {calib}x{calib} is larger than 1/{acceleration} of {shape}")
    mask = sigpy.mri.poisson((h, w), acceleration, calib=(calib, calib), dtype=np.float32, seed=seed,
                             crop_corner=False)
    return SamplingMask(np.abs(mask).astype(np.float32), calib)


def make_mask(kind: str, shape: tuple[int, int], acceleration: float,
              center_fraction: float | None = None, seed: int = 0) -> SamplingMask:
    """Build a mask of ``kind`` for k-space of image shape (H, W)."""
    if kind == "random":
        return random_column_mask(shape[-1], acceleration, center_fraction, seed)
    if kind == "equispaced":
        return equispaced_column_mask(shape[-1], acceleration, center_fraction, seed)
    if kind == "poisson":
        calib = max(8, int(round(min(shape) * (center_fraction or 0.08))))
        return poisson_disc_mask(shape, acceleration, calib, seed)
    raise ValueError(f"unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}")


def mask_from_kspace(kspace: np.ndarray) -> SamplingMask:
    """Recover a column mask from the zero columns of undersampled k-space (..., H, W)."""
    energy = np.abs(kspace).reshape(-1, *kspace.shape[-2:]).sum(axis=(0, 1))
    mask = (energy > 0).astype(np.float32)
    if mask.sum() == 0:
        raise ValueError("k-space is all zeros: no sampled columns")
    return SamplingMask(mask[None, :], count_center_lines(mask))


def count_center_lines(mask_1d: np.ndarray) -> int:
    """Length of the contiguous run of sampled columns through the centre."""
    m = np.asarray(mask_1d).reshape(-1) > 0
    c = m.size // 2
    if not m[c]:
        return 0
    lo, hi = c, c
    while lo > 0 and m[lo - 1]:
        lo -= 1
    while hi < m.size - 1 and m[hi + 1]:
        hi += 1
    return hi - lo + 1
