"""Coil sensitivity operators on complex tensors.

With sensitivity maps ``S`` of shape (..., C, H, W) and an image ``x`` of shape (..., H, W):

* expand:  ``E(x)_c = S_c x``                       -> (..., C, H, W)
* reduce:  ``R(z) = sum_c conj(S_c) z_c``           -> (..., H, W)

``reduce`` is the adjoint of ``expand``: ``<E x, z> = <x, R z>``. ``CoilExpand`` is the pair as an operator,
also for several map sets (soft-SENSE): maps (..., M, C, H, W), images (..., M, H, W), ``E(x)_c = sum_m S_mc x_m``.
"""

from __future__ import annotations

import torch

from models.physics.linop import LinearOperator

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


class CoilExpand(LinearOperator):
    """``E``: image (..., H, W) -> coil images (..., C, H, W), ``E^H`` = ``reduce``; ``E^H E x = (sum_c |S_c|^2) x``.

    ``sets=True``: maps (..., M, C, H, W), images (..., M, H, W), ``E(x) = sum_m S_m x_m``,
    ``E^H(z)_m = sum_c conj(S_mc) z_c``.
    """

    def __init__(self, maps: torch.Tensor, sets: bool = False):
        self.maps = maps
        self.sets = sets
        self._sos: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sets:
            return (self.maps * x.unsqueeze(COIL_DIM)).sum(dim=COIL_DIM - 1)
        return expand(x, self.maps)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self.sets:
            return (self.maps.conj() * y.unsqueeze(COIL_DIM - 1)).sum(dim=COIL_DIM)
        return reduce(y, self.maps)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        if self.sets:
            return self.adjoint(self.forward(x))
        if self._sos is None:
            m = self.maps
            self._sos = (m.real.square() + m.imag.square() if m.is_complex() else m * m).sum(dim=COIL_DIM)
        return x * self._sos
