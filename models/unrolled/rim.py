"""Recurrent Inference Machine for multi-coil MRI (Putzky & Welling 2017; Lonning et al. 2019).

An image-domain recurrence. With ``A x = M F E(x)`` (expand to coils, FFT, mask) and measurements ``y``::

    x_0  = R(y) = sum_c conj(S_c) F^-1 y_c                     SENSE-combined zero-filled image
    g_t  = A^H (A x_t - y) = sum_c conj(S_c) F^-1 M (M F S_c x_t - y_c)
    (dx_t, h_{t+1}) = G([x_t, g_t], h_t)                         one recurrent unit, shared by all steps
    x_{t+1} = x_t + dx_t

``g_t`` is the gradient of the data term ``||A x - y||^2 / 2``. The recurrent unit ``G`` is a
:class:`ConvRecurrentUnit` with GRU or IndRNN cells (the efficient RIM's cheaper choice). Training uses
all iterates ``x_1 .. x_T`` (loss averaged over them); inference uses ``x_T``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.unrolled.complex_ops import CenteredFFT, check_fft_variant, check_inputs, expand, reduce
from models.unrolled.conv_gru import ConvRecurrentUnit
from models.unrolled.sens_unet import SensitivityRefiner

REFERENCE_CONFIG = {"num_steps": 16, "hidden_channels": 128, "num_layers": 2, "cell": "gru"}
"""DIRECT's Calgary-Campinas RIM setting (about 0.36 M parameters)."""


class RIM(nn.Module):
    """RIM on real tensors (complex in a trailing axis of size 2), weights shared across steps.

    Inputs of :meth:`forward` are those of :class:`RecurrentVarNet`: ``masked_kspace`` (N, C, H, W, 2),
    ``mask`` broadcastable to (N, 1, H, W, 1), ``sens_maps`` (N, C, H, W, 2).
    In eval mode the output is the last iterate (N, H, W, 2); in training mode it is the list of all
    ``num_steps`` iterates (use :meth:`iterates` to get the list in either mode).

    Args:
        num_steps: T, recurrence steps (one set of weights for all).
        hidden_channels, num_layers: recurrent unit width and depth.
        cell: ``"gru"`` or ``"indrnn"``.
        sens_refinement: refine the maps with a small U-Net (``sens_unet_channels``, ``sens_unet_pools``).
        fft_variant: ``"dft-op"`` or ``"matmul"`` (switchable later with :meth:`set_fft_variant`).
    """

    def __init__(self, num_steps: int = 16, hidden_channels: int = 128, num_layers: int = 2, cell: str = "gru",
                 sens_refinement: bool = False, sens_unet_channels: int = 8, sens_unet_pools: int = 4,
                 fft_variant: str = "dft-op"):
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.fft_variant = check_fft_variant(fft_variant)
        self.num_steps = num_steps
        self.unit = ConvRecurrentUnit(4, hidden_channels, 2, num_layers, cell=cell)
        self.sens_refiner = SensitivityRefiner(sens_unet_channels, sens_unet_pools) if sens_refinement else None

    def set_fft_variant(self, fft_variant: str) -> None:
        """Switch the FFT implementation (``"dft-op"`` or ``"matmul"``); the weights are unchanged."""
        self.fft_variant = check_fft_variant(fft_variant)

    @staticmethod
    def data_gradient(image: torch.Tensor, masked_kspace: torch.Tensor, mask: torch.Tensor,
                      sens_maps: torch.Tensor, fourier: CenteredFFT) -> torch.Tensor:
        """``A^H (A x - y)`` for an image (N, H, W, 2); ``mask`` must already be a float tensor."""
        residual = mask * (fourier.fft(expand(image, sens_maps)) - masked_kspace)
        return reduce(fourier.ifft(residual), sens_maps)

    def iterates(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
                 ) -> list[torch.Tensor]:
        """All iterates ``[x_1, ..., x_T]``, each (N, H, W, 2)."""
        check_inputs(masked_kspace, mask, sens_maps)
        mask = mask.to(masked_kspace.dtype)
        if self.sens_refiner is not None:
            sens_maps = self.sens_refiner(sens_maps)
        fourier = CenteredFFT(self.fft_variant, masked_kspace)
        image = reduce(fourier.ifft(masked_kspace), sens_maps)
        state = None
        out = []
        for _ in range(self.num_steps):
            grad = self.data_gradient(image, masked_kspace, mask, sens_maps, fourier)
            cell_input = torch.cat((image, grad), dim=-1).permute(0, 3, 1, 2)   # (N, 4, H, W)
            delta, state = self.unit(cell_input, state)
            image = image + delta.permute(0, 2, 3, 1)
            out.append(image)
        return out

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
                ) -> torch.Tensor | list[torch.Tensor]:
        steps = self.iterates(masked_kspace, mask, sens_maps)
        return steps if self.training else steps[-1]
