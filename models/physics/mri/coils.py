"""Coil sensitivity operators on complex tensors.

With sensitivity maps ``S`` of shape (..., C, H, W) and an image ``x`` of shape (..., H, W):

* expand:  ``E(x)_c = S_c x``                       -> (..., C, H, W)
* reduce:  ``R(z) = sum_c conj(S_c) z_c``           -> (..., H, W)

``reduce`` is the adjoint of ``expand``: ``<E x, z> = <x, R z>``.
"""

from __future__ import annotations

import torch

COIL_DIM = -3


def expand(image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Multiply an image (..., H, W) by each coil map (..., C, H, W)."""
    return maps * image.unsqueeze(COIL_DIM)


def reduce(coil_images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Combine coil images (..., C, H, W) with conjugate maps: ``sum_c conj(S_c) z_c``."""
    return (maps.conj() * coil_images).sum(dim=COIL_DIM)


def rss(coil_images: torch.Tensor, dim: int = COIL_DIM) -> torch.Tensor:
    """Root sum of squares of magnitudes over the coil axis."""
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=dim))
