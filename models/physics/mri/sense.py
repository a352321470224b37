"""The multi-coil Cartesian SENSE forward model ``A = M F S``, composed from operators.

``S = CoilExpand(maps)`` (image -> coil images), ``F = FFT2c()`` (centered orthonormal FFT), ``M = Mask(mask)``
(a 0/1 diagonal). ``SenseOperator`` is ``M @ F @ S`` with a faster normal ``A^H A`` for even image sizes
(``fast_normal``); ``SoftSenseOperator`` the same with several map sets (ESPIRiT's soft-SENSE).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.physics.linop import LinearOperator, Multiply
from models.physics.mri.coils import CoilExpand
from models.physics.mri.fft import FFT2c


class Mask(Multiply):
    """The sampling mask ``M`` (1 = sampled, broadcastable to k-space) as a diagonal operator; ``M^H M = M^2``."""

    def __init__(self, mask: torch.Tensor, dtype: torch.dtype | None = None):
        super().__init__(mask if dtype is None else mask.to(dtype))


class SenseOperator(LinearOperator):
    """``A x = M F (S x)`` for images (..., H, W) and k-space (..., C, H, W).

    ``maps``: (..., C, H, W) complex sensitivities; ``mask``: broadcastable to k-space, 1 = sampled (None: all).
    ``op`` is the composition ``Mask @ FFT2c @ CoilExpand``; ``normal`` uses the shift-free form (``fast_normal``).
    """

    sets = False

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor | None = None):
        self.maps = maps
        self.mask = None if mask is None else mask.to(maps.real.dtype)
        composed = FFT2c() @ CoilExpand(maps, sets=self.sets)
        self.op = composed if self.mask is None else Mask(self.mask) @ composed
        self._normal: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        if self._normal is None:
            self._normal = _normal_function(self.maps, self.mask, self.sets, self.op)
        return self._normal(x)


class SoftSenseOperator(SenseOperator):
    """Several sets of maps (ESPIRiT's soft-SENSE): ``A x = M F sum_m S_m x_m``.

    ``maps``: (..., M, C, H, W); images (..., M, H, W), one per set; k-space (..., C, H, W).
    With M = 1 it equals ``SenseOperator`` on a singleton set axis.
    """

    sets = True


def checkerboard(h: int, w: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None) -> torch.Tensor:
    """``(-1)^(i + j)`` on an (h, w) grid."""
    i = torch.arange(h, device=device)[:, None]
    j = torch.arange(w, device=device)[None, :]
    return (1 - 2 * ((i + j) % 2)).to(dtype)


def _normal_function(maps: torch.Tensor, mask: torch.Tensor | None, sets: bool,
                     composed: LinearOperator) -> Callable[[torch.Tensor], torch.Tensor]:
    h, w = maps.shape[-2:]
    if h % 2 or w % 2:
        return composed.normal
    dmaps = maps * checkerboard(h, w, maps.real.dtype, maps.device)
    dmaps_conj = dmaps.conj().resolve_conj()
    dims = (-2, -1)

    def normal(x: torch.Tensor) -> torch.Tensor:
        coil = (dmaps * x.unsqueeze(-3)).sum(dim=-4) if sets else dmaps * x.unsqueeze(-3)
        k = torch.fft.fft2(coil, dim=dims, norm="ortho")
        if mask is not None:
            k = k * mask
        coil = torch.fft.ifft2(k, dim=dims, norm="ortho")
        if sets:
            return (dmaps_conj * coil.unsqueeze(-4)).sum(dim=-3)
        return (dmaps_conj * coil).sum(dim=-3)

    return normal


def fast_normal(maps: torch.Tensor, mask: torch.Tensor | None = None,
                sets: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> A^H A x`` for ``A = M F S`` without the FFT shifts, for even H and W (``SenseOperator.normal``).

    For even sizes the centred FFT is ``fft2c(x) = +-D fft2(D x)`` with ``D = (-1)^(i+j)``, and the
    sign and the outer ``D`` cancel in ``F^H M F`` (``D`` and ``M`` are both diagonal, ``M^2 = M``), so
    ``A^H A x = (D S)^H ifft2(M fft2((D S) x))``: the checkerboard is folded into the maps once.
    ``sets=True`` takes (..., M, C, H, W) maps (soft-SENSE, images (..., M, H, W)). Falls back to
    the shifted transforms for odd sizes.
    """
    op = SoftSenseOperator(maps, mask) if sets else SenseOperator(maps, mask)
    return op.normal
