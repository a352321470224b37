"""Domain-randomised brain training slices for the unrolled MRI networks, made on the fly.

One template brain gives one anatomy and a few contrasts; a network trained on it learns them. Each slice drawn
here is a new object and a new acquisition:

1. **anatomy**: an axial slice of the template's *training* slabs (the val/test slabs and the held-out
   orientations are never drawn), warped by a random affine map (scale, rotation, shift) and a smooth random
   displacement field of up to ``deformation_mm``;
2. **contrast** (domain randomisation): each tissue probability map (CSF, grey, white matter) is blurred by a
   random partial-volume kernel and given a random intensity, ``m = sum_t I_t blur(p_t)``, so no tissue order
   is special; with probability ``template_t1`` the template's own T1 image is used instead (its texture);
   then a smooth multiplicative bias field ``exp(b f)``;
3. **acquisition** (``pipelines.simulate.mri.acquire``): a random matrix size over the 240 mm field of view,
   a random number of birdcage coils, a smooth random phase, complex noise at a random SNR;
4. **mask**: a random or equispaced column mask at a random acceleration, fastMRI centre fractions with at least
   ``MIN_CENTER_LINES`` centre columns.

Every draw is a function of its seed only, so a resumed training run sees the same slices. Matrix sizes are drawn
with probability proportional to ``1 / size^2`` by default, so a training step costs about the same on average
whatever the range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from models.physics.mri.masks import calibrated_center_fraction, make_mask
from pipelines.simulate import brain
from pipelines.simulate.mri import MIN_CENTER_LINES, MRISimulationConfig, acquire, slab_starts, smooth_field

TISSUES = ("csf", "gm", "wm")
COLUMN_MASKS = ("random", "equispaced")


@dataclass(frozen=True)
class RandomBrainConfig:
    """Ranges of the randomisation (each ``(low, high)``, drawn uniformly unless said otherwise)."""

    sizes: tuple[int, int] = (96, 320)             # square matrix over the 240 mm field of view
    coils: tuple[int, int] = (4, 20)
    snr_db: tuple[float, float] = (15.0, 40.0)
    accelerations: tuple[float, float] = (2.0, 10.0)
    masks: tuple[str, ...] = COLUMN_MASKS
    deformation_mm: float = 8.0                    # peak of the smooth displacement field
    scale: tuple[float, float] = (0.85, 1.15)      # per axis
    rotation_deg: float = 15.0
    shift_mm: float = 10.0
    blur_mm: tuple[float, float] = (0.0, 1.5)      # partial-volume blur of the tissue maps (Gaussian sigma)
    intensity: tuple[float, float] = (0.05, 1.0)   # each tissue's signal
    bias: float = 0.4                              # peak |log| of the bias field
    template_t1: float = 0.2                       # probability of the template's T1 image as the contrast
    cost_balanced: bool = True                     # sizes drawn with probability ~ 1 / size^2

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RandomBrainConfig:
        """From JSON (lists for ranges); ``ValueError`` naming an unknown key or a bad range."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown randomisation setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        cfg.check()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def check(self) -> None:
        def span(name: str, low: float, high: float, integer: bool = False) -> None:
            value = getattr(self, name)
            ok = (isinstance(value, tuple) and len(value) == 2
                  and all(isinstance(v, int if integer else int | float) and not isinstance(v, bool)
                          and math.isfinite(v) for v in value)
                  and low <= value[0] <= value[1] <= high)
            if not ok:
                raise ValueError(f"{name} must be a [low, high] pair within [{low:g}, {high:g}], got {value!r}")

        span("sizes", 32, 512, integer=True)
        span("coils", 1, 64, integer=True)
        span("snr_db", 0, 80)
        span("accelerations", 1, 16)
        span("scale", 0.5, 2)
        span("blur_mm", 0, 5)
        span("intensity", 0, 1)
        if not self.masks or any(m not in COLUMN_MASKS for m in self.masks):
            raise ValueError(f"masks must be some of {', '.join(COLUMN_MASKS)}, got {self.masks!r}")
        for name, high in (("deformation_mm", 30), ("rotation_deg", 180), ("shift_mm", 50), ("bias", 2),
                           ("template_t1", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
                raise ValueError(f"{name} must be a number in [0, {high:g}], got {value!r}")
        if not isinstance(self.cost_balanced, bool):
            raise ValueError(f"cost_balanced must be true or false, got {self.cost_balanced!r}")


@dataclass
class RandomSlice:
    """One drawn training slice: fully sampled noisy k-space, its reference and the mask to apply."""

    kspace: np.ndarray        # (coils, H, W) complex64
    reference: np.ndarray     # (H, W) float32
    mask: np.ndarray          # (1, W) float32
    num_low_frequencies: int
    noise_sigma: float
    draw: dict[str, Any]      # what was drawn, for logs and tests


@lru_cache(maxsize=1)
def training_slice_indices() -> np.ndarray:
    """Cube indices of every axial slice inside the training slabs (``pipelines.simulate.mri`` splits)."""
    cfg = MRISimulationConfig()
    span = (cfg.slices - 1) * cfg.slice_step + 1
    return np.array([s + i for s in slab_starts("axial", "train", cfg) for i in range(span)])


def _sample_coordinates(size: int, cfg: RandomBrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Cube (row, col) coordinates, in 1 mm template pixels, of each pixel of a warped ``size`` x ``size`` slice."""
    cube = brain.CUBE_MM
    step = cube / size
    grid = (np.arange(size) + 0.5) * step - 0.5 - (cube - 1) / 2   # centred on the cube, mm
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    angle = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    scale = rng.uniform(*cfg.scale, size=2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = rot / scale[None, :]                                  # output -> template: the inverse map
    points = linear @ np.stack([rows.ravel(), cols.ravel()])
    points += rng.uniform(-cfg.shift_mm, cfg.shift_mm, size=(2, 1))
    amplitude = rng.uniform(0, cfg.deformation_mm)
    for axis in range(2):
        points[axis] += amplitude * smooth_field((size, size), size / 8, rng).ravel()
    return (points + (cube - 1) / 2).reshape(2, size, size)


def _contrast(slices: dict[str, np.ndarray], cfg: RandomBrainConfig, rng: np.random.Generator
              ) -> tuple[np.ndarray, dict[str, Any]]:
    """Magnitude on the 1 mm template slice: random tissue intensities of blurred tissue maps, or the T1 image."""
    blur = rng.uniform(*cfg.blur_mm)
    intensities = rng.uniform(*cfg.intensity, size=len(TISSUES))
    if rng.uniform() < cfg.template_t1:
        image, kind = slices["t1"], "template-t1"
    else:
        image = sum(w * slices[t] for w, t in zip(intensities, TISSUES, strict=True))
        kind = "tissue-mixture"
    if blur > 0:
        image = ndimage.gaussian_filter(image, blur)
    return image.astype(np.float32), {"contrast": kind, "blur_mm": float(blur),
                                      "intensities": [float(v) for v in intensities]}


def draw_slice(seed: int, cfg: RandomBrainConfig | None = None) -> RandomSlice:
    """The training slice of ``seed``: anatomy, contrast, acquisition and mask all drawn from it."""
    cfg = cfg or RandomBrainConfig()
    rng = np.random.default_rng([seed, 7])
    maps, _ = brain.load_template()
    index = int(rng.choice(training_slice_indices()))
    slices = {k: maps[k][index] for k in (*TISSUES, "t1")}
    sizes = np.arange(cfg.sizes[0], cfg.sizes[1] + 1, 2 if cfg.sizes[0] % 2 == 0 else 1)
    weights = 1.0 / sizes.astype(float) ** 2 if cfg.cost_balanced else np.ones(len(sizes))
    size = int(rng.choice(sizes, p=weights / weights.sum()))
    image, draw = _contrast(slices, cfg, rng)
    coordinates = _sample_coordinates(size, cfg, rng)
    magnitude = np.clip(ndimage.map_coordinates(image, coordinates, order=1, mode="constant"), 0, None)
    bias = rng.uniform(0, cfg.bias)
    magnitude = magnitude * np.exp(bias * smooth_field((size, size), size / 4, rng))
    peak = float(magnitude.max())
    magnitude = (magnitude / peak if peak > 0 else magnitude).astype(np.float32)
    coils = int(rng.integers(cfg.coils[0], cfg.coils[1] + 1))
    snr_db = float(rng.uniform(*cfg.snr_db))
    kspace, reference, sigma = acquire(magnitude[None], coils, snr_db, rng)
    acceleration = float(rng.uniform(*cfg.accelerations))
    kind = str(rng.choice(list(cfg.masks)))
    center_fraction = calibrated_center_fraction(size, acceleration, MIN_CENTER_LINES)
    mask = make_mask(kind, (size, size), acceleration, center_fraction, seed=int(rng.integers(2**31)))
    draw.update(slice_index=index, size=size, coils=coils, snr_db=snr_db, acceleration=acceleration, mask=kind,
                bias=float(bias))
    return RandomSlice(kspace[0], reference[0], mask.mask.astype(np.float32), mask.num_low_frequencies,
                       sigma, draw)
