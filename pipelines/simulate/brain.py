"""Brain anatomy from the ICBM152 2009 template packaged inside nilearn (read by ``pipelines.simulate.template``).

The template (1 mm, 197 x 233 x 189, brain-extracted) gives a T1 image and grey/white-matter
probability maps; CSF is the rest of the brain mask. Tissue fractions make several contrasts:

    image = sum_t fraction_t * signal_t(contrast)

``t1`` uses the template's own T1 image; ``t2``, ``pd`` and ``flair`` use tissue signal tables.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipelines.simulate.template import load_icbm152

CONTRASTS = ("t1", "t2", "pd", "flair")
ORIENTATIONS = ("axial", "coronal", "sagittal")

# relative signal of (csf, grey matter, white matter) per contrast
TISSUE_SIGNAL = {
    "t2": (1.00, 0.55, 0.38),
    "pd": (0.90, 0.82, 0.68),
    "flair": (0.06, 0.78, 0.55),
}
CUBE_MM = 240  # the template is padded to a 240 mm cube: the simulated field of view


@lru_cache(maxsize=1)
def load_template() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tissue volumes (z, y, x) in [0, 1] padded to a 240^3 cube, and the cube's voxel-to-RAS affine
    for (i=x, j=y, k=z) indices. ``InputError`` naming what to install when the template is missing."""
    raw, affine = load_icbm152()
    maps = {key: (volume / 255.0).transpose(2, 1, 0) for key, volume in raw.items()}
    shape = np.array(maps["t1"].shape)  # (z, y, x)
    before = (CUBE_MM - shape) // 2
    pads = [(int(b), int(CUBE_MM - s - b)) for b, s in zip(before, shape, strict=True)]
    maps = {k: np.pad(v, pads) for k, v in maps.items()}
    brain = (maps["t1"] > 0.02).astype(np.float32)
    maps["csf"] = np.clip(brain - maps["gm"] - maps["wm"], 0, 1)
    shift = np.eye(4)
    shift[:3, 3] = -before[::-1]  # (x, y, z) order
    return maps, affine @ shift


def contrast_volume(contrast: str, signal_jitter: np.ndarray | None = None) -> np.ndarray:
    """Magnitude volume (z, y, x) in the 240 mm cube for one contrast."""
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of {', '.join(CONTRASTS)}")
    maps, _ = load_template()
    if contrast == "t1":
        return maps["t1"] * (1.0 if signal_jitter is None else float(signal_jitter[0]))
    signal = np.array(TISSUE_SIGNAL[contrast])
    if signal_jitter is not None:
        signal = signal * signal_jitter
    return signal[0] * maps["csf"] + signal[1] * maps["gm"] + signal[2] * maps["wm"]


def slice_axis(orientation: str) -> int:
    """Axis of the (z, y, x) cube that slices of an orientation step along."""
    try:
        return {"axial": 0, "coronal": 1, "sagittal": 2}[orientation]
    except KeyError:
        raise ValueError(f"unknown orientation {orientation!r}; choose one of {', '.join(ORIENTATIONS)}") from None


def take_slices(volume: np.ndarray, orientation: str, indices: np.ndarray) -> np.ndarray:
    """Slices (n, rows, cols) of the cube: axial (y, x), coronal (z, x), sagittal (z, y)."""
    axis = slice_axis(orientation)
    return np.moveaxis(np.take(volume, indices, axis=axis), axis, 0)


def brain_extent(orientation: str, min_fraction: float = 0.25) -> tuple[int, int]:
    """First and last cube index along the slice axis whose brain area is at least ``min_fraction``
    of the largest slice's."""
    maps, _ = load_template()
    brain = maps["t1"] > 0.02
    other = tuple(a for a in range(3) if a != slice_axis(orientation))
    area = brain.sum(axis=other)
    keep = np.flatnonzero(area >= min_fraction * area.max())
    return int(keep[0]), int(keep[-1])


def slab_affine(orientation: str, first_index: int, slice_step: int, matrix: int) -> np.ndarray:
    """Voxel-to-RAS affine of a slab resampled to ``matrix`` x ``matrix`` in-plane.

    The slab's voxel (i=col, j=row, k=slice) maps to cube indices (pixel centres aligned,
    ``c = (i + 0.5) * CUBE_MM / matrix - 0.5``) and then through the cube's affine.
    """
    _, cube_affine = load_template()
    scale = CUBE_MM / matrix
    offset = 0.5 * scale - 0.5
    # columns of ``to_cube`` give the cube (x, y, z) index change per slab (i, j, k) step
    axes = {"axial": ("x", "y", "z"), "coronal": ("x", "z", "y"), "sagittal": ("y", "z", "x")}[orientation]
    pos = {"x": 0, "y": 1, "z": 2}
    to_cube = np.zeros((4, 4))
    to_cube[3, 3] = 1
    for col, (name, step) in enumerate(zip(axes, (scale, scale, slice_step), strict=True)):
        to_cube[pos[name], col] = step
        to_cube[pos[name], 3] = offset if col < 2 else first_index
    return cube_affine @ to_cube
