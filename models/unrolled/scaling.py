"""Input scaling for the unrolled networks.

Networks are trained and run on k-space divided by a per-sample scale

    s = quantile_q(|y|)       over all entries (coils, ky, kx) of the masked k-space, q = 0.99

so that inputs have a comparable range whatever the scanner gain; outputs are multiplied by ``s``
again. Unsampled (zero) entries count, as in DIRECT's percentile normalisation.
"""

from __future__ import annotations

import math

import torch

DEFAULT_QUANTILE = 0.99


def kspace_scale(masked_kspace: torch.Tensor, quantile: float = DEFAULT_QUANTILE,
                 complex_last: bool = True) -> torch.Tensor:
    """Per-sample ``quantile`` of ``|masked_kspace|``; shape (N,).

    ``masked_kspace`` is real (N, ..., 2) with complex in the last axis (``complex_last=True``) or a
    complex tensor (N, ...). A sample whose quantile is 0 (empty k-space) gets scale 1.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if masked_kspace.is_complex():
        mag = masked_kspace.abs()
    elif complex_last:
        if masked_kspace.shape[-1] != 2:
            raise ValueError(f"real masked_kspace needs a trailing complex axis of size 2, "
                             f"got shape {tuple(masked_kspace.shape)}")
        mag = torch.sqrt(masked_kspace[..., 0] ** 2 + masked_kspace[..., 1] ** 2)
    else:
        mag = masked_kspace.abs()
    flat = mag.reshape(mag.shape[0], -1).float()
    n = flat.shape[1]
    # k-th smallest with k = ceil(q n): the nearest-rank quantile, no element-count limit
    k = min(max(int(math.ceil(quantile * n)), 1), n)
    scale = torch.kthvalue(flat, k, dim=1).values
    return torch.where(scale > 0, scale, torch.ones_like(scale)).to(mag.dtype)


def scale_kspace(masked_kspace: torch.Tensor, quantile: float = DEFAULT_QUANTILE
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide (N, ...) k-space by its per-sample scale; returns ``(scaled, scale)``, scale of shape (N,).

    Multiply the network output (N, ...) by ``scale`` reshaped to broadcast to undo the scaling.
    """
    scale = kspace_scale(masked_kspace, quantile)
    shape = (-1,) + (1,) * (masked_kspace.ndim - 1)
    return masked_kspace / scale.reshape(shape), scale
