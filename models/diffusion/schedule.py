"""The variance-preserving (VP / DDPM) noise schedule, and the algebra every sampler shares.

Forward process (Ho et al. 2020): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, ``eps ~ N(0, I)``,
``abar_t = prod_{s <= t} (1 - beta_s)``, with ``beta`` linear from ``beta_start`` to ``beta_end`` over
``num_train_timesteps`` steps (MONAI's ``DDPMScheduler`` holds the table). A network trained to predict
``eps`` from ``(x_t, t)`` gives the posterior mean of ``x_0`` by Tweedie's formula,
``E[x_0 | x_t] = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)``, and a DDIM step (Song et al. 2021) from
``t`` to ``s < t`` with stochasticity ``eta`` in [0, 1] (the DDS parametrisation, Chung et al. 2024) is
``x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) (eta z + sqrt(1 - eta^2) eps_hat)``, ``z ~ N(0, I)``:
``eta = 0`` is deterministic DDIM. This ``eta`` is not DDIM's ``eta`` of Song et al.: at ``eta = 1`` it
re-noises ``x0`` with fresh noise only, which is not ancestral sampling (with an exact denoiser it shrinks the
samples' variance; see ``models.diffusion.sampling.ancestral_eta`` for the step that samples exactly).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class VPSchedule:
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 2 or not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"need num_train_timesteps >= 2 and 0 < beta_start < beta_end < 1, got {self}")

    @functools.cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """``abar_t`` for ``t = 0 .. T-1`` (float64), from MONAI's DDPM scheduler."""
        from monai.networks.schedulers import DDPMScheduler

        sched = DDPMScheduler(num_train_timesteps=self.num_train_timesteps, schedule="linear_beta",
                              beta_start=self.beta_start, beta_end=self.beta_end)
        return sched.alphas_cumprod.to(torch.float64)

    def abar(self, t: int) -> float:
        """``abar_t`` of one timestep; ``t = -1`` means the clean image (1.0)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with one ``t`` per batch item."""
        ab = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def first_timestep(self, start: float = 1.0) -> int:
        """The timestep a sampler starting at ``start`` (a fraction of the schedule, in (0, 1]) begins at:
        ``round(start (T - 1))``; 1 is ``T - 1``, pure noise."""
        if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0.0 < float(start) <= 1.0:
            raise ValueError(f"start must be a fraction of the schedule in (0, 1], got {start!r}")
        return int(round(float(start) * (self.num_train_timesteps - 1)))

    def timesteps(self, steps: int, start: float = 1.0) -> list[int]:
        """``steps`` timesteps from ``first_timestep(start)`` down to 0, evenly spaced (the sampler visits them in
        order); at most ``first_timestep(start) + 1`` of them."""
        first = self.first_timestep(start)
        if not 1 <= steps <= first + 1:
            raise ValueError(f"steps must be in [1, {first + 1}] (timesteps {first}..0 at start {start:g}), "
                             f"got {steps}")
        return [int(t) for t in np.unique(np.round(np.linspace(0, first, steps)))[::-1]]


def tweedie(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float) -> torch.Tensor:
    """Posterior mean of ``x_0``: ``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    return (x_t - (1.0 - abar_t) ** 0.5 * eps) / abar_t ** 0.5


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, abar_next: float, eta: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """``sqrt(abar_s) x0 + sqrt(1 - abar_s) (eta z + sqrt(1 - eta^2) eps)``; ``abar_next = 1`` returns ``x0``."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if abar_next >= 1.0:
        return x0
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device) if eta > 0 else 0.0
    return abar_next ** 0.5 * x0 + (1.0 - abar_next) ** 0.5 * (eta * z + (1.0 - eta ** 2) ** 0.5 * eps)
