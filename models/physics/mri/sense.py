"""The multi-coil Cartesian SENSE forward model ``A = M F S``."""

from __future__ import annotations

from collections.abc import Callable

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


class SoftSenseOperator(SenseOperator):
    """Several sets of maps (ESPIRiT's soft-SENSE): ``A x = M F sum_m S_m x_m``.

    ``maps``: (..., M, C, H, W); images (..., M, H, W), one per set; k-space (..., C, H, W).
    With M = 1 it equals ``SenseOperator`` on a singleton set axis.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply_mask(fft2c((self.maps * x.unsqueeze(-3)).sum(dim=-4)))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        coil_images = ifft2c(self._apply_mask(y)).unsqueeze(-4)
        return (self.maps.conj() * coil_images).sum(dim=-3)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.forward(x))


def checkerboard(h: int, w: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None) -> torch.Tensor:
    """``(-1)^(i + j)`` on an (h, w) grid."""
    i = torch.arange(h, device=device)[:, None]
    j = torch.arange(w, device=device)[None, :]
    return (1 - 2 * ((i + j) % 2)).to(dtype)


def fast_normal(maps: torch.Tensor, mask: torch.Tensor | None = None,
                sets: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> A^H A x`` for ``A = M F S`` without the FFT shifts, for even H and W.

    For even sizes the centred FFT is ``fft2c(x) = +-D fft2(D x)`` with ``D = (-1)^(i+j)``, and the
    sign and the outer ``D`` cancel in ``F^H M F`` (``D`` and ``M`` are both diagonal), so
    ``A^H A x = (D S)^H ifft2(M fft2((D S) x))``: the checkerboard is folded into the maps once.
    ``sets=True`` takes (..., M, C, H, W) maps (soft-SENSE, images (..., M, H, W)). Falls back to
    the shifted transforms for odd sizes.
    """
    h, w = maps.shape[-2:]
    if h % 2 or w % 2:
        op = SoftSenseOperator(maps, mask) if sets else SenseOperator(maps, mask)
        return op.normal
    dmaps = maps * checkerboard(h, w, maps.real.dtype, maps.device)
    dmaps_conj = dmaps.conj().resolve_conj()
    m = None if mask is None else mask.to(maps.real.dtype)
    dims = (-2, -1)

    def normal(x: torch.Tensor) -> torch.Tensor:
        coil = (dmaps * x.unsqueeze(-3)).sum(dim=-4) if sets else dmaps * x.unsqueeze(-3)
        k = torch.fft.fft2(coil, dim=dims, norm="ortho")
        if m is not None:
            k = k * m
        coil = torch.fft.ifft2(k, dim=dims, norm="ortho")
        if sets:
            return (dmaps_conj * coil.unsqueeze(-4)).sum(dim=-3)
        return (dmaps_conj * coil).sum(dim=-3)

    return normal
