"""EDM (Karras et al. 2022) denoisers for complex MRI images, and the two training losses of the MRI priors.

Noise model (variance exploding, no scaling): ``x_sigma = x + sigma n``, ``n`` standard normal in each of the two
real channels (real, imaginary) of a complex image. The network ``F`` is wrapped so that

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),  c_in = 1 / sqrt(sigma^2 + sd^2)

with ``sd = SIGMA_DATA`` (0.5: images are scaled to about that spread before they reach the prior), is the
denoiser ``E[x | x_sigma]``. ``c_noise`` maps ``sigma`` to MONAI's sinusoidal timestep embedding:
``c_noise = 80 (ln sigma + 7)`` puts sigma in [0.002, 80] on about [64, 912], the range of DDPM timesteps.

The network also takes a mask channel (``(N, 1, H, W)``, 1 where k-space columns were kept):

* fully sampled prior: the mask is all ones and the input is ``x_sigma``;
* ambient prior (Daras et al. 2023, Aali et al. 2024): the prior never sees a clean image. A training slice is
  measured as ``y = A x + e`` with ``A = M F S`` (training mask ``M``); its input is further corrupted by a
  sub-mask ``M~`` of ``M``, ``A~ = M~ F S``:  ``x_in = A~^H y + A~^H A~ (sigma n)``, with ``M~`` as the mask
  channel, and the loss is computed through ``A`` only: ``lambda(sigma) ||A D(x_in) - y||^2``, which needs no
  fully sampled data. At sampling time the iterate is projected the same way, ``x_in = A~^H A~ x_sigma``, with a
  fixed ``M~`` of the training kind.

Training noise levels: ``ln sigma ~ N(P_MEAN, P_STD^2)``, loss weight ``lambda = (sigma^2 + sd^2) / (sigma sd)^2``.
Sampling noise levels: ``sigma_i = (smax^(1/r) + i/(N-1) (smin^(1/r) - smax^(1/r)))^r``, then 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from models.physics.linop import LinearOperator

SIGMA_DATA = 0.5
P_MEAN, P_STD = -1.2, 1.2
SIGMA_MIN, SIGMA_MAX, RHO = 0.004, 10.0, 7.0  # A-DPS's sampling range (Aali et al.)

DEFAULT_MRI_PRIOR_CONFIG: dict[str, Any] = {
    # sized for two CPU cores: attention only at 16 x 16 for 128 x 128 slices
    "channels": [32, 64, 64, 128],
    "attention_levels": [False, False, False, True],
    "num_res_blocks": 1,
    "num_head_channels": 32,
    "norm_num_groups": 32,
}


def to_channels(z: torch.Tensor) -> torch.Tensor:
    """Complex ``(N, H, W)`` -> real ``(N, 2, H, W)`` (real, imaginary)."""
    return torch.stack((z.real, z.imag), dim=1)


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``(N, 2, H, W)`` -> complex ``(N, H, W)``."""
    return torch.complex(x[:, 0], x[:, 1])


def column_mask_channel(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A k-space mask broadcastable to ``(N, 1, 1, W)`` (or ``(W,)``) as the network's ``(N, 1, H, W)`` channel."""
    m = mask.reshape(-1, 1, 1, shape[-1]) if mask.ndim <= 2 else mask.reshape(mask.shape[0], 1, -1, shape[-1])
    return m.to(torch.float32).expand(m.shape[0], 1, shape[0], shape[1])


def build_mri_prior_unet(config: dict[str, Any] | None = None) -> torch.nn.Module:
    """MONAI's ``DiffusionModelUNet``: 3 channels in (real, imaginary, mask), 2 out."""
    from monai.networks.nets import DiffusionModelUNet

    cfg = {**DEFAULT_MRI_PRIOR_CONFIG, **(config or {})}
    unknown = set(cfg) - set(DEFAULT_MRI_PRIOR_CONFIG)
    if unknown:
        raise ValueError(f"unknown MRI prior network settings: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(DEFAULT_MRI_PRIOR_CONFIG)}")
    if len(cfg["channels"]) != len(cfg["attention_levels"]):
        raise ValueError("channels and attention_levels need one entry per level")
    return DiffusionModelUNet(spatial_dims=2, in_channels=3, out_channels=2, channels=tuple(cfg["channels"]),
                              attention_levels=tuple(cfg["attention_levels"]),
                              num_res_blocks=int(cfg["num_res_blocks"]),
                              num_head_channels=int(cfg["num_head_channels"]),
                              norm_num_groups=int(cfg["norm_num_groups"]))


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    return 80.0 * (torch.log(sigma) + 7.0)


class EDMPrecond(torch.nn.Module):
    """``D(x, sigma, mask)`` of the module docstring around ``net(input (N, 3, H, W), timesteps (N,))``.

    ``x``: ``(N, 2, H, W)`` float32; ``sigma``: ``(N,)``; ``mask``: ``(N, 1, H, W)``. Exported to ONNX as is.
    """

    def __init__(self, net: torch.nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (s ** 2 + sd2)
        c_out = s * self.sigma_data / torch.sqrt(s ** 2 + sd2)
        c_in = 1.0 / torch.sqrt(s ** 2 + sd2)
        f = self.net(torch.cat((c_in * x, mask.to(x.dtype)), dim=1), c_noise(sigma.reshape(-1).to(x.dtype)))
        return c_skip * x + c_out * f.to(x.dtype)  # float32 out, also under bfloat16 autocast


def karras_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO) -> list[float]:
    """``steps`` noise levels from ``sigma_max`` down to ``sigma_min``, then 0 (``steps + 1`` values)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if steps == 1:
        return [float(sigma_max), 0.0]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [float((a + i / (steps - 1) * (b - a)) ** rho) for i in range(steps)] + [0.0]


def training_sigmas(n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                    ) -> torch.Tensor:
    """``n`` training noise levels, ``ln sigma ~ N(P_MEAN, P_STD^2)``."""
    return torch.exp(P_MEAN + P_STD * torch.randn(n, generator=generator, device=device))


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def complex_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal in each real channel: ``n_r + i n_i``."""
    g = torch.randn((2, *shape), generator=generator, device=device)
    return torch.complex(g[0], g[1])


def denoising_loss(model: EDMPrecond, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Fully sampled prior: mean over the batch of ``lambda(sigma) ||D(x + sigma n) - x||^2 / (2 H W)``.

    ``x``, ``noise``: complex ``(N, H, W)``; ``sigma``: ``(N,)``.
    """
    s = sigma.reshape(-1, 1, 1)
    ones = torch.ones((x.shape[0], 1, *x.shape[-2:]), device=x.device)
    d = to_complex(model(to_channels(x + s * noise), sigma, ones))
    err = (d - x).abs().pow(2).mean(dim=(-2, -1)) / 2
    return (loss_weight(sigma) * err).mean()


def ambient_loss(model: EDMPrecond, y: torch.Tensor, A: LinearOperator, A_further: LinearOperator,  # noqa: N803
                 further_mask: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Ambient prior: mean over the batch of ``lambda(sigma) ||A D(x_in) - y||^2 / (2 |sampled|)`` with
    ``x_in = A~^H y + A~^H A~ (sigma n)`` and ``further_mask`` (``M~``, as ``(N, 1, H, W)``) as the mask channel.

    ``y``: k-space ``(N, C, H, W)`` (zero where ``A`` did not sample); ``A``, ``A_further``: ``SenseOperator`` of the
    training mask and of the further mask (a subset of it); ``noise``: complex ``(N, H, W)``; ``sigma``: ``(N,)``.
    The loss sees ``y`` only, never a fully sampled image.
    """
    s = sigma.reshape(-1, 1, 1)
    x_in = A_further.adjoint(y) + A_further.normal(s * noise)
    d = to_complex(model(to_channels(x_in), sigma, further_mask))
    r = A.forward(d) - y
    sampled = (torch.ones_like(r.real) * A.mask).sum(dim=tuple(range(1, r.ndim))).clamp_min(1)
    err = r.abs().pow(2).sum(dim=tuple(range(1, r.ndim))) / (2 * sampled)
    return (loss_weight(sigma) * err).mean()


def edm_denoise(model: EDMPrecond, x: torch.Tensor, sigma: float, *, A_further: LinearOperator | None = None,  # noqa: N803
                further_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``D(x; sigma)`` for complex ``(N, H, W)`` images with a torch ``EDMPrecond``, keeping autograd if enabled.

    Ambient priors need ``A_further`` and ``further_mask`` (the fixed sampling-time sub-mask): the input is
    projected to ``A~^H A~ x`` as in training. Fully sampled priors take neither (mask all ones).
    """
    if (A_further is None) != (further_mask is None):
        raise ValueError("an ambient prior needs both A_further and further_mask; a fully sampled one neither")
    n = x.shape[0]
    x_in = x if A_further is None else A_further.normal(x)
    mask = (torch.ones((n, 1, *x.shape[-2:]), device=x.device) if further_mask is None
            else further_mask.expand(n, 1, *x.shape[-2:]))
    sig = torch.full((n,), float(sigma), device=x.device)
    return to_complex(model(to_channels(x_in), sig, mask))


def sigma_check(sigma: float) -> float:
    if not (isinstance(sigma, float | int) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    return float(sigma)
