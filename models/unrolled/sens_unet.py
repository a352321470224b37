"""Sensitivity-map refinement: a small U-Net applied to each coil map, then renormalisation.

    S'_c = S_c + U(S_c)                      (U sees one coil map as 2 channels: real, imag)
    S''_c = S'_c / sqrt(sum_c |S'_c|^2 + eps)

so the refined maps again satisfy ``sum_c |S_c|^2 = 1``. The U-Net works on any H, W:
pooling uses ceil mode and each upsampled map is cropped to its skip connection's size.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.InstanceNorm2d(out_channels),
        nn.LeakyReLU(0.2),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.InstanceNorm2d(out_channels),
        nn.LeakyReLU(0.2),
    )


class UNet2d(nn.Module):
    """Plain U-Net: ``pools`` 2x down/up levels, ``channels * 2**level`` features per level."""

    def __init__(self, in_channels: int = 2, out_channels: int = 2, channels: int = 8, pools: int = 4):
        super().__init__()
        if pools < 1 or channels < 1:
            raise ValueError(f"UNet2d needs channels >= 1 and pools >= 1, got {channels}, {pools}")
        self.down = nn.ModuleList()
        ch = channels
        prev = in_channels
        for _ in range(pools):
            self.down.append(_conv_block(prev, ch))
            prev, ch = ch, ch * 2
        self.bottom = _conv_block(prev, ch)
        self.up_convs = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for _ in range(pools):
            self.up_convs.append(nn.ConvTranspose2d(ch, ch // 2, 2, stride=2))
            self.up_blocks.append(_conv_block(ch, ch // 2))
            ch //= 2
        self.head = nn.Conv2d(ch, out_channels, 1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, block in zip(self.up_convs, self.up_blocks, strict=True):
            skip = skips.pop()
            x = up(x)[..., : skip.shape[-2], : skip.shape[-1]]
            x = block(torch.cat((x, skip), dim=1))
        return self.head(x)


class SensitivityRefiner(nn.Module):
    """Refines maps (N, C, H, W, 2) coil by coil with a shared small U-Net and renormalises them."""

    def __init__(self, channels: int = 8, pools: int = 4, eps: float = 1e-12):
        super().__init__()
        self.unet = UNet2d(2, 2, channels, pools)
        self.eps = eps

    def forward(self, sens_maps: torch.Tensor) -> torch.Tensor:
        n, c, h, w, _ = sens_maps.shape
        per_coil = sens_maps.permute(0, 1, 4, 2, 3).reshape(n * c, 2, h, w)
        refined = per_coil + self.unet(per_coil)
        refined = refined.reshape(n, c, 2, h, w).permute(0, 1, 3, 4, 2)
        norm = torch.sqrt((refined ** 2).sum(dim=(1, 4), keepdim=True) + self.eps)
        return refined / norm
