"""Simulated multi-coil brain MRI acquisitions with ground truth.

For a slab of slices of one contrast and orientation:

1. magnitude ``m`` from the ICBM152 tissue maps (``pipelines.simulate.brain``), resampled to
   ``size x size`` over a 240 mm field of view;
   optionally raised to a random power (``gamma_range``, log-uniform): a monotone intensity
   augmentation that changes contrast but keeps the order of the tissues;
2. a smooth random phase ``phi`` (low-pass filtered noise, up to about +-pi);
3. birdcage coil maps ``S_c`` (sigpy) with a random radius;
4. ``k_c = F(S_c m e^{i phi}) + n_c``, complex Gaussian noise with standard deviation
   ``sigma = mean(|S m| in the object) / 10^(snr_db / 20)`` (orthonormal FFT: the same sigma
   per coil image pixel);
5. a column mask (fastMRI random/equispaced, fastMRI's centre fractions but at least
   ``MIN_CENTER_LINES`` centre columns) or a Poisson-disc mask; acceleration 1 keeps it all.

The reference is the RSS of the noise-free, fully sampled coil images, ``|m| sqrt(sum_c |S_c|^2)``,
which is what a SENSE reconstruction with maps normalised to ``sum |S|^2 = 1`` estimates.

Splits keep evaluation honest: the brain's extent along the slice axis is cut into slabs separated
by a gap, and slabs are dealt round-robin in the pattern train, train, val, train, test. The
held-out sets use another orientation (coronal, sagittal) or an unseen contrast (FLAIR).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from models.physics.mri.fft import fft2c
from models.physics.mri.masks import MASK_KINDS, calibrated_center_fraction, make_mask
from pipelines.data import MRIAcquisition
from pipelines.simulate import brain
from pipelines.simulate.splits import (  # noqa: F401 - re-exported: the split plan lives with the simulation
    BENCHMARK_SETS,
    HELD_OUT_CONTRAST,
    HELD_OUT_ORIENTATIONS,
    SPLIT_PATTERN,
    SPLITS,
    TRAIN_CONTRASTS,
)

# fastMRI's centre fractions (0.08 at 4x, 0.04 at 8x) leave too few lines for coil calibration on the
# small matrices simulated here, so at least this many centre columns are kept (at most 70% of all sampled)
MIN_CENTER_LINES = 10


@dataclass(frozen=True)
class MRISimulationConfig:
    size: int = 128
    coils: int = 8
    slices: int = 4            # slices per slab (one file)
    slice_step: int = 2        # mm between slices
    gap: int = 4               # mm between slabs, so neighbouring slabs of different splits do not overlap
    snr_db: float = 30.0
    mask: str = "random"
    readout_oversampling: int = 1
    seed: int = 0
    gamma_range: tuple[float, float] | None = None  # intensity augmentation: m -> max(m) (m / max(m))^gamma

    def validate(self) -> None:
        if self.size < 16 or self.size > 512:
            raise ValueError(f"size must be in [16, 512], got {self.size}")
        if not 1 <= self.coils <= 64:
            raise ValueError(f"coils must be in [1, 64], got {self.coils}")
        if self.slices < 1:
            raise ValueError(f"slices must be at least 1, got {self.slices}")
        if self.mask not in MASK_KINDS:
            raise ValueError(f"unknown mask {self.mask!r}; choose one of {', '.join(MASK_KINDS)}")
        if self.readout_oversampling not in (1, 2):
            raise ValueError("readout oversampling must be 1 or 2")
        if self.gamma_range is not None and not 0 < self.gamma_range[0] <= self.gamma_range[1]:
            raise ValueError(f"gamma range must satisfy 0 < low <= high, got {self.gamma_range}")


def slab_starts(orientation: str, split: str, cfg: MRISimulationConfig) -> list[int]:
    """Cube indices of the first slice of each slab of ``split`` along ``orientation``'s slice axis.

    Held-out orientations are never trained on: they have no ``train`` slabs (their ``val`` slabs calibrate the
    out-of-distribution flag, their ``test`` slabs are the held-out set).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    lo, hi = brain.brain_extent(orientation)
    span = (cfg.slices - 1) * cfg.slice_step + 1
    starts = list(range(lo, hi - span + 2, span + cfg.gap))
    if orientation in HELD_OUT_ORIENTATIONS and split == "train":
        return []
    return [s for n, s in enumerate(starts) if SPLIT_PATTERN[n % len(SPLIT_PATTERN)] == split]


def smooth_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Low-pass random field (white noise under a periodic Gaussian of ``sigma`` pixels) with peak ``|value|`` 1."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    return field / max(float(np.abs(field).max()), 1e-12)


def _smooth_phase(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    return (np.pi * smooth_field(shape, shape[0] / 6, rng)).astype(np.float32)


def _coil_maps(coils: int, size: int, rng: np.random.Generator) -> np.ndarray:
    import sigpy.mri

    maps = sigpy.mri.birdcage_maps((coils, size, size), r=float(rng.uniform(1.2, 1.8)), nzz=max(coils, 1))
    return maps.astype(np.complex64)


def _resample(slices: np.ndarray, size: int) -> np.ndarray:
    factor = size / slices.shape[-1]
    out = ndimage.zoom(slices, (1, factor, factor), order=1, grid_mode=True, mode="grid-constant")
    return np.clip(out, 0, None).astype(np.float32)


def acquire(magnitude: np.ndarray, coils: int, snr_db: float, rng: np.random.Generator,
            readout_oversampling: int = 1) -> tuple[np.ndarray, np.ndarray, float]:
    """Fully sampled noisy coil k-space of magnitude slices ``m`` (n, size, size), with their RSS reference.

    ``k_c = F(S_c m e^{i phi}) + n_c`` with a smooth random phase ``phi``, birdcage maps ``S_c`` and complex
    noise of standard deviation ``sigma = mean(|S m| in the object) / 10^(snr_db / 20)``; the reference is
    ``|m| sqrt(sum_c |S_c|^2)``. Returns (k-space (n, coils, H, W) complex64, reference (n, size, size), sigma).
    """
    size = magnitude.shape[-1]
    phase = _smooth_phase((size, size), rng)
    image = magnitude * np.exp(1j * phase)[None]
    maps = _coil_maps(coils, size, rng)
    coil_images = maps[None] * image[:, None]                       # (slices, coils, H, W)
    reference = (magnitude * np.sqrt((np.abs(maps) ** 2).sum(0))[None]).astype(np.float32)
    if readout_oversampling > 1:
        pad = (readout_oversampling - 1) * size // 2
        coil_images = np.pad(coil_images, ((0, 0), (0, 0), (pad, pad), (0, 0)))
    kspace = fft2c(torch.from_numpy(coil_images.astype(np.complex64))).numpy()
    obj = reference > 0.1 * reference.max()
    sigma = float(reference[obj].mean()) / 10 ** (snr_db / 20)
    noise = rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)
    return (kspace + sigma / np.sqrt(2) * noise).astype(np.complex64), reference, sigma


def simulate_slab(contrast: str, orientation: str, first_index: int, acceleration: float,
                  cfg: MRISimulationConfig, seed: int) -> MRIAcquisition:
    """One slab of ``cfg.slices`` slices as an acquisition (undersampled when acceleration > 1)."""
    cfg.validate()
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(0.9, 1.1, size=3)
    volume = brain.contrast_volume(contrast, jitter)
    indices = first_index + cfg.slice_step * np.arange(cfg.slices)
    magnitude = _resample(brain.take_slices(volume, orientation, indices), cfg.size)
    gamma = 1.0
    if cfg.gamma_range is not None:  # own generator: slabs without augmentation stay as they were
        low, high = np.log(cfg.gamma_range[0]), np.log(cfg.gamma_range[1])
        gamma = float(np.exp(np.random.default_rng([seed, 1]).uniform(low, high)))
        peak = float(magnitude.max()) or 1.0
        magnitude = (peak * (magnitude / peak) ** gamma).astype(np.float32)
    kspace, reference, sigma = acquire(magnitude, cfg.coils, cfg.snr_db, rng, cfg.readout_oversampling)
    mask_info = None
    if acceleration > 1:
        center_fraction = calibrated_center_fraction(kspace.shape[-1], acceleration, MIN_CENTER_LINES)
        mask_info = make_mask(cfg.mask, kspace.shape[-2:], acceleration, center_fraction, seed=seed)
        kspace = kspace * mask_info.mask
    return MRIAcquisition(
        kspace=kspace,
        mask=None if mask_info is None else mask_info.mask,
        num_low_frequencies=None if mask_info is None else mask_info.num_low_frequencies,
        recon_shape=(cfg.size, cfg.size),
        reference=reference,
        affine=brain.slab_affine(orientation, first_index, cfg.slice_step, cfg.size),
        attrs={
            "contrast": contrast, "orientation": orientation, "acceleration": float(acceleration),
            "acquisition": f"simulated-{contrast}-{orientation}", "snr_db": cfg.snr_db,
            "noise_sigma": sigma, "mask_kind": cfg.mask if acceleration > 1 else "none",
            "first_slice_index": int(first_index), "patient_id": "icbm152-sim",
            "fov_mm": float(brain.CUBE_MM), "slice_step_mm": float(cfg.slice_step), "seed": int(seed),
            "max": float(reference.max()), "intensity_gamma": gamma,
        },
        source=f"simulated:{contrast}:{orientation}:{first_index}",
    )


@dataclass(frozen=True)
class SlabSpec:
    """What one simulated file holds."""

    contrast: str
    orientation: str
    first_index: int
    acceleration: float
    seed: int
    repeat: int = 0

    @property
    def file_name(self) -> str:
        acc = "full" if self.acceleration <= 1 else f"{self.acceleration:g}x"
        rep = f"_r{self.repeat}" if self.repeat else ""
        return f"{self.contrast}_{self.orientation}_{self.first_index:03d}_{acc}{rep}.h5"


def plan(split: str, contrasts: tuple[str, ...], orientations: tuple[str, ...], accelerations: tuple[float, ...],
         cfg: MRISimulationConfig, max_files: int | None = None, repeats: int = 1) -> list[SlabSpec]:
    """Every (contrast, orientation, slab, acceleration) of a split, each with its own seed.

    ``repeats`` > 1 simulates each slab several times with other coils, phase, tissue signal and noise.
    """
    specs = []
    for orientation in orientations:
        for start in slab_starts(orientation, split, cfg):
            for contrast in contrasts:
                for acc in accelerations:
                    for repeat in range(repeats):
                        seed = cfg.seed * 1_000_003 + len(specs)
                        specs.append(SlabSpec(contrast, orientation, start, float(acc), seed, repeat))
    if max_files is not None:
        # spread the picks over the slabs rather than taking the first few
        picks = np.unique(np.linspace(0, len(specs) - 1, max_files).round().astype(int)) if specs else []
        specs = [specs[i] for i in picks]
    return specs


def simulate(specs: list[SlabSpec], cfg: MRISimulationConfig,
             progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[SlabSpec, MRIAcquisition]]:
    for n, spec in enumerate(specs):
        yield spec, simulate_slab(spec.contrast, spec.orientation, spec.first_index, spec.acceleration, cfg,
                                  spec.seed)
        if progress:
            progress(n + 1, len(specs))


def write_set(out: str | Path, specs: list[SlabSpec], cfg: MRISimulationConfig,
              progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Simulate ``specs`` and write each slab as a fastMRI HDF5 file ``out/spec.file_name`` (``out`` is created);
    ``progress(done, total)`` after each file. Returns the written paths, in the order of ``specs``."""
    from pipelines.io.fastmri import write_fastmri

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_fastmri(out / spec.file_name, acq) for spec, acq in simulate(specs, cfg, progress)]


# training slabs are simulated this many times (other coils, phase, tissue signal, noise)
TRAIN_REPEATS = 3

