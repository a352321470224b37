"""The multi-coil Cartesian SENSE forward model ``A = M F S``."""

from __future__ import annotations

import torch

from models.physics.linop import LinearOperator
from models.physics.mri.coils import expand, reduce
from models.physics.mri.fft import fft2c, ifft2c


class SenseOperator(LinearOperator):
    """``A x = M F (S x)`` for images (..., H, W) and k-space (..., C, H, W).

    ``maps``: (..., C, H, W) complex sensitivities; ``mask``: broadcastable to k-space, 1 = sampled.
    """

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor | None = None):
        self.maps = maps
        self.mask = None if mask is None else mask.to(maps.real.dtype)

    def _apply_mask(self, k: torch.Tensor) -> torch.Tensor:
        return k if self.mask is None else k * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply_mask(fft2c(expand(x, self.maps)))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return reduce(ifft2c(self._apply_mask(y)), self.maps)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        # the mask is a projection, so M^H M = M: one application suffices
        return reduce(ifft2c(self._apply_mask(fft2c(expand(x, self.maps)))), self.maps)
