"""Recurrent Variational Network (Yiasemis et al., CVPR 2022).

T blocks refine the multi-coil k-space itself. With the measured (masked) k-space ``y``, the sampling
mask ``M``, the sensitivity maps ``S`` and the centered orthonormal FFT ``F``::

    E(x)_c = S_c x                      expand an image to coil images
    R(k)   = sum_c conj(S_c) F^-1 k_c   coil-combine a multi-coil k-space

    k_0 = y
    (w_t, h_{t+1}) = H_t(R(k_t), h_t)                      ConvGRU regulariser of block t
    k_{t+1} = k_t - a_t M (k_t - y) + F(E(w_t))            a_t: learned scalar, initialised to 1

and the output image is ``R(k_T)``. Each block has its own weights (no sharing). The hidden state
``h_0`` (N, hidden, H, W, n_l) comes from a learned initializer (RecurrentInit) that looks at the
SENSE-combined measurement ``x_SENSE = R(y)``, or is zero when the initializer is disabled.
Optionally the maps are first refined by a small U-Net (:class:`SensitivityRefiner`).

All tensors are real with complex in a trailing axis of size 2; the FFT implementation is injected by
name (``fft_variant``: ``"dft-op"`` or ``"matmul"``) so the same weights export with either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.unrolled.complex_ops import CenteredFFT, check_fft_variant, check_inputs, expand, reduce
from models.unrolled.conv_gru import ConvRecurrentUnit, padded_conv
from models.unrolled.sens_unet import SensitivityRefiner

PAPER_CONFIG = {
    "num_steps": 8,
    "hidden_channels": 128,
    "num_layers": 4,
    "learned_initializer": True,
    "initializer_channels": [32, 32, 64, 64],
    "initializer_dilations": [1, 1, 2, 4],
    "multiscale": 3,
}
"""The Calgary-Campinas configuration of the paper (about 6.9 M parameters without the map U-Net)."""


class RecurrentInit(nn.Module):
    """Recurrent state initializer: dilated 3x3 convolutions, multi-scale concat, one 1x1 conv per layer.

    ``x`` (N, in, H, W) -> conv_i (ReLU) for each (channels_i, dilation_i) -> concat of the last
    ``multiscale`` feature maps -> ``num_layers`` separate 1x1 convs (ReLU) stacked on a last axis:
    ``h_0`` of shape (N, hidden, H, W, num_layers).
    """

    def __init__(self, in_channels: int = 2, hidden_channels: int = 128, num_layers: int = 4,
                 channels: Sequence[int] = (32, 32, 64, 64), dilations: Sequence[int] = (1, 1, 2, 4),
                 multiscale: int = 3):
        super().__init__()
        if len(channels) != len(dilations) or not channels:
            raise ValueError(f"initializer channels {list(channels)} and dilations {list(dilations)} "
                             "must be non-empty and of equal length")
        if not 1 <= multiscale <= len(channels):
            raise ValueError(f"multiscale must be in [1, {len(channels)}], got {multiscale}")
        self.multiscale = multiscale
        convs = []
        prev = in_channels
        for ch, dil in zip(channels, dilations, strict=True):
            convs.append(padded_conv(prev, ch, 3, dilation=dil))
            prev = ch
        self.convs = nn.ModuleList(convs)
        cat_channels = sum(channels[-multiscale:])
        self.heads = nn.ModuleList(nn.Conv2d(cat_channels, hidden_channels, 1) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for conv in self.convs:
            x = F.relu(conv(x))
            features.append(x)
        x = torch.cat(features[-self.multiscale:], dim=1)
        return torch.stack([F.relu(head(x)) for head in self.heads], dim=-1)


class RecurrentVarNetBlock(nn.Module):
    """One block: ``k' = k - a M (k - y) + F(E(w))`` with ``(w, h') = ConvGRU(R(k), h)``."""

    def __init__(self, hidden_channels: int = 128, num_layers: int = 4):
        super().__init__()
        self.step_size = nn.Parameter(torch.tensor(1.0))
        self.regularizer = ConvRecurrentUnit(2, hidden_channels, 2, num_layers, cell="gru")

    def forward(self, kspace: torch.Tensor, masked_kspace: torch.Tensor, mask: torch.Tensor,
                sens_maps: torch.Tensor, state: torch.Tensor | None, fourier: CenteredFFT
                ) -> tuple[torch.Tensor, torch.Tensor]:
        data_term = mask * (kspace - masked_kspace)
        image = reduce(fourier.ifft(kspace), sens_maps)                       # (N, H, W, 2)
        w, state = self.regularizer(image.permute(0, 3, 1, 2), state)
        reg_kspace = fourier.fft(expand(w.permute(0, 2, 3, 1), sens_maps))    # (N, C, H, W, 2)
        return kspace - self.step_size * data_term + reg_kspace, state


class RecurrentVarNet(nn.Module):
    """Recurrent Variational Network on real tensors (complex in a trailing axis of size 2).

    Defaults are the paper configuration (T=8, hidden 128, n_l=4, multiscale 3).

    Inputs of :meth:`forward`:
        masked_kspace: (N, C, H, W, 2) measured k-space, zero where not sampled (centered).
        mask: broadcastable to (N, 1, H, W, 1), e.g. (N, 1, 1, W, 1) or (N, 1, H, W, 1); 1 = sampled.
        sens_maps: (N, C, H, W, 2), normalised so ``sum_c |S_c|^2 = 1``.
    Output: the coil-combined complex image ``R(k_T)``, (N, H, W, 2); :meth:`predict_kspace` gives ``k_T``.

    Args:
        num_steps: T, the number of blocks (each with its own weights and step size).
        hidden_channels: ConvGRU feature/hidden channels.
        num_layers: n_l, ConvGRU layers per block.
        learned_initializer: use RecurrentInit for ``h_0`` (else zeros).
        initializer_channels, initializer_dilations, multiscale: RecurrentInit layout.
        sens_refinement: refine the maps with a small U-Net (``sens_unet_channels``, ``sens_unet_pools``).
        fft_variant: ``"dft-op"`` or ``"matmul"`` (switchable later with :meth:`set_fft_variant`).
    """

    def __init__(self, num_steps: int = 8, hidden_channels: int = 128, num_layers: int = 4,
                 learned_initializer: bool = True,
                 initializer_channels: Sequence[int] = (32, 32, 64, 64),
                 initializer_dilations: Sequence[int] = (1, 1, 2, 4), multiscale: int = 3,
                 sens_refinement: bool = False, sens_unet_channels: int = 8, sens_unet_pools: int = 4,
                 fft_variant: str = "dft-op"):
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.fft_variant = check_fft_variant(fft_variant)
        self.initializer = (RecurrentInit(2, hidden_channels, num_layers, initializer_channels,
                                          initializer_dilations, multiscale) if learned_initializer else None)
        self.blocks = nn.ModuleList(RecurrentVarNetBlock(hidden_channels, num_layers) for _ in range(num_steps))
        self.sens_refiner = SensitivityRefiner(sens_unet_channels, sens_unet_pools) if sens_refinement else None

    def set_fft_variant(self, fft_variant: str) -> None:
        """Switch the FFT implementation (``"dft-op"`` or ``"matmul"``); the weights are unchanged."""
        self.fft_variant = check_fft_variant(fft_variant)

    def _run(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor,
             keep: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, CenteredFFT]:
        check_inputs(masked_kspace, mask, sens_maps)
        mask = mask.to(masked_kspace.dtype)
        if self.sens_refiner is not None:
            sens_maps = self.sens_refiner(sens_maps)
        fourier = CenteredFFT(self.fft_variant, masked_kspace)
        state = None
        if self.initializer is not None:
            x_sense = reduce(fourier.ifft(masked_kspace), sens_maps)
            state = self.initializer(x_sense.permute(0, 3, 1, 2))
        kspace = masked_kspace
        for block in self.blocks:
            kspace, state = block(kspace, masked_kspace, mask, sens_maps, state, fourier)
            if keep is not None:
                keep.append(reduce(fourier.ifft(kspace), sens_maps))
        return kspace, sens_maps, fourier

    def iterates(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
                 ) -> list[torch.Tensor]:
        """The image after every block, ``[R(k_1), ..., R(k_T)]``, each (N, H, W, 2): for a loss over all
        blocks (as RIM is trained); the last one is :meth:`forward`'s output."""
        out: list[torch.Tensor] = []
        self._run(masked_kspace, mask, sens_maps, keep=out)
        return out

    def predict_kspace(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the T blocks; returns the final k-space ``k_T`` (N, C, H, W, 2) and the (refined) maps used."""
        kspace, sens_maps, _ = self._run(masked_kspace, mask, sens_maps)
        return kspace, sens_maps

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
        kspace, sens_maps, fourier = self._run(masked_kspace, mask, sens_maps)
        return reduce(fourier.ifft(kspace), sens_maps)
