"""The 2D denoiser network of the diffusion priors: MONAI's diffusion U-Net predicting the noise ``eps``.

Inputs ``x_t`` of shape ``(N, 1, H, W)`` (H and W multiples of ``2 ** (levels - 1)``) and timesteps ``(N,)``
(integers in ``[0, T)``); output ``eps_hat`` of the input's shape. Images are in the prior's normalised units
(CT: ``HU / 1000``, so air is -1, water 0 and bone about 1).
"""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_PRIOR_CONFIG: dict[str, Any] = {
    # sized so a 64-slice 128 x 128 volume takes minutes on two CPU cores at 50 steps (see the model card)
    "channels": [32, 64, 128, 128],
    "attention_levels": [False, False, False, True],
    "num_res_blocks": 1,
    "num_head_channels": 32,
    "norm_num_groups": 32,  # group norm groups; every channel count must be a multiple
}


def build_prior_unet(config: dict[str, Any] | None = None) -> torch.nn.Module:
    """A MONAI ``DiffusionModelUNet`` (2D, one channel in and out) from ``config`` (``DEFAULT_PRIOR_CONFIG``
    keys; unknown keys are refused)."""
    from monai.networks.nets import DiffusionModelUNet

    cfg = {**DEFAULT_PRIOR_CONFIG, **(config or {})}
    unknown = set(cfg) - set(DEFAULT_PRIOR_CONFIG)
    if unknown:
        raise ValueError(f"unknown prior network settings: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(DEFAULT_PRIOR_CONFIG)}")
    if len(cfg["channels"]) != len(cfg["attention_levels"]):
        raise ValueError("channels and attention_levels need one entry per level")
    return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(cfg["channels"]),
                              attention_levels=tuple(cfg["attention_levels"]),
                              num_res_blocks=int(cfg["num_res_blocks"]),
                              num_head_channels=int(cfg["num_head_channels"]),
                              norm_num_groups=int(cfg["norm_num_groups"]))


def size_multiple(config: dict[str, Any] | None = None) -> int:
    """Image sizes the network takes are multiples of this."""
    cfg = {**DEFAULT_PRIOR_CONFIG, **(config or {})}
    return 2 ** (len(cfg["channels"]) - 1)
