"""Centre crop and centre pad over the last two axes (numpy arrays or torch tensors)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def center_crop(x: Array, shape: tuple[int, int]) -> Array:
    """Crop the last two axes to ``shape`` around the centre (index ``n // 2`` stays central)."""
    h, w = x.shape[-2:]
    ch, cw = shape
    if ch > h or cw > w:
        raise ValueError(f"cannot crop {(h, w)} to larger {shape}")
    top, left = h // 2 - ch // 2, w // 2 - cw // 2
    return x[..., top:top + ch, left:left + cw]


def center_pad(x: Array, shape: tuple[int, int]) -> Array:
    """Zero-pad the last two axes to ``shape`` around the centre; the inverse of ``center_crop``."""
    h, w = x.shape[-2:]
    ph, pw = shape
    if ph < h or pw < w:
        raise ValueError(f"cannot pad {(h, w)} to smaller {shape}")
    top, left = ph // 2 - h // 2, pw // 2 - w // 2
    if isinstance(x, torch.Tensor):
        out = x.new_zeros((*x.shape[:-2], ph, pw))
    else:
        out = np.zeros((*x.shape[:-2], ph, pw), dtype=x.dtype)
    out[..., top:top + h, left:left + w] = x
    return out
