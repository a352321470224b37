"""PNG previews of image volumes: one slice, or a mosaic, windowed to 8 bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(image: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Window a real image to [0, 255]; default window is [0, 99.5th percentile] of the magnitude."""
    mag = np.abs(image).astype(np.float32)
    low = 0.0 if low is None else low
    high = float(np.percentile(mag, 99.5)) if high is None else high
    if high <= low:
        high = low + 1e-12
    return (np.clip((mag - low) / (high - low), 0, 1) * 255).round().astype(np.uint8)


def mosaic(volume: np.ndarray, max_tiles: int = 16) -> np.ndarray:
    """Tile up to ``max_tiles`` evenly spaced slices of a (z, y, x) volume into one image."""
    z = volume.shape[0]
    picks = np.unique(np.linspace(0, z - 1, min(z, max_tiles)).round().astype(int))
    cols = int(np.ceil(np.sqrt(len(picks))))
    rows = int(np.ceil(len(picks) / cols))
    h, w = volume.shape[1:]
    out = np.zeros((rows * h, cols * w), dtype=np.abs(volume[:1]).dtype)
    for n, idx in enumerate(picks):
        r, c = divmod(n, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = np.abs(volume[idx])
    return out


def write_png(path: str | Path, image: np.ndarray, low: float | None = None,
              high: float | None = None) -> Path:
    """Write a 2D image, or a mosaic of a 3D (z, y, x) volume, as an 8-bit grayscale PNG.

    Rows are flipped so that +y (anterior in RAS) is at the top, as viewers show it.
    """
    path = Path(path)
    array = mosaic(image) if image.ndim == 3 else image
    if array.ndim != 2:
        raise ValueError(f"PNG preview needs a 2D image or 3D volume, got shape {image.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(array[::-1], low, high), mode="L").save(path)
    return path
