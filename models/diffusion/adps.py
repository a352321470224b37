"""Ambient Diffusion Posterior Sampling (A-DPS; Aali et al. 2024): the exact algorithm, with autograd through the prior.

This is A-DPS as published: the EDM Euler sampler of an (ambient or fully sampled) EDM prior plus the DPS likelihood
step, whose gradient is taken through the denoiser. It needs a differentiable denoiser (a torch model, not an ONNX
session). ``models.diffusion.adps_fast`` approximates it without that gradient. Neither is an exact sampler of the
posterior ``p(x | y)``: DPS's likelihood step is a heuristic, so the sample spread is only roughly the posterior's
(``tests/test_adps_sampler.py`` measures both against a Gaussian prior's exact posterior).

Prior: ``den(x, sigma) = D(x; sigma) = E[x0 | x0 + sigma z = x]`` (``ComplexDenoiser``; complex images ``(N, H, W)``,
``z`` standard normal in each real channel), e.g. ``edm_denoiser(model)`` or the closed-form
``models.diffusion.gaussian.GaussianEDMDenoiser``. Noise levels ``sigma_0 = sigma_max > ... > sigma_{n-1} =
sigma_min``, ``sigma_n = 0`` (``karras_sigmas``: ``(smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho``,
A-DPS's 0.004 .. 10, rho 7). From ``x = sigma_max z``, step ``i`` (Karras et al.'s stochastic Euler step)::

    g       = min(churn / n, sqrt(2) - 1)                      (0 without churn)
    s       = (1 + g) sigma_i,    x <- x + sqrt(s^2 - sigma_i^2) z'          (churn: raise the noise level)
    D       = den(x, s)                                        (autograd on)
    x'      = x + (sigma_{i+1} - s) (x - D) / s                (Euler step of the probability-flow ODE)
    r_k     = y - A D_k,   sse_k = ||r_k||^2                   (per sample k)
    x_{i+1} = x' - step_size / sqrt(sse_k) grad_x sum_k sse_k  (likelihood step, DPS)

``grad_x sse_k = -2 J_D(x)^H A^H r_k`` (``J_D`` the denoiser's Jacobian; for complex ``x`` torch's gradient is
``d/d Re + i d/d Im``), so the likelihood step is ``2 step_size`` times the unit-free direction
``J^H A^H r / ||r||``: a move of about ``2 step_size ||A^H r|| / ||r||`` in image norm per step, whatever the noise
level (``step_size`` is in image units; Aali et al. use 1 on fastMRI images). The last step (``sigma_n = 0``) makes
``x' = D``; the result is that final denoised image moved by the last likelihood step. (The reference code returns
the iterate before its last step.) ``A = None``, ``y = None`` or ``step_size = 0``: plain EDM Euler sampling of
the prior.

Ambient priors (trained on undersampled data) see ``A~^H A~ x`` with a fixed further mask: pass ``A_further`` and
``further_mask`` to ``edm_denoiser`` (``models.diffusion.edm.edm_denoise``).

``adps_posterior`` draws ``K`` samples (batched along a new leading axis, each with the same ``y``) and returns
their per-pixel mean and standard deviation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from models.diffusion._edm_sampling import (
    ComplexDenoiser,
    Progress,
    broadcast_weights,
    check_common,
    check_pair,
    complex_randn,
    denoise,
    gamma_churn,
    per_sample,
    posterior_moments,
    start,
)
from models.diffusion._validate import check_count, check_measurement, check_weight
from models.diffusion.edm import RHO, SIGMA_MAX, SIGMA_MIN, EDMPrecond, edm_denoise
from models.physics.linop import LinearOperator

__all__ = ["ComplexDenoiser", "adps_posterior", "adps_sample", "edm_denoiser"]


def edm_denoiser(model: EDMPrecond, *, A_further: LinearOperator | None = None,  # noqa: N803 - math name
                 further_mask: torch.Tensor | None = None) -> ComplexDenoiser:
    """``edm_denoise`` with the model (and an ambient prior's further sub-mask operator and mask) bound: a
    ``ComplexDenoiser`` that keeps autograd. Put the model in eval mode first (and freeze its parameters with
    ``requires_grad_(False)`` to keep their gradients out of A-DPS's graph)."""
    if (A_further is None) != (further_mask is None):
        raise ValueError("an ambient prior needs both A_further and further_mask; a fully sampled one neither")
    return functools.partial(edm_denoise, model, A_further=A_further, further_mask=further_mask)


def adps_sample(den: ComplexDenoiser, A: LinearOperator | None, y: torch.Tensor | None,  # noqa: N803 - math name
                shape: Sequence[int], *, steps: int = 100, step_size: float = 1.0, churn: float = 0.0,
                sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO, batch_dims: int = 1,
                generator: torch.Generator | None = None, progress: Progress | None = None,
                x_init: torch.Tensor | None = None, dtype: torch.dtype = torch.complex64,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Exact A-DPS (module docstring): complex images of ``shape`` ``(..., H, W)`` from ``y = A x + noise``.

    ``shape``'s first ``batch_dims`` axes index independent samples (default 1: ``(K, H, W)`` is K samples, each
    with its own ``sse_k``; ``A`` must act on them one by one, as ``SenseOperator`` does on leading axes, and ``y``
    is broadcast, e.g. ``(C, H, W)`` k-space for all K). ``den`` is called on all ``prod(shape[:-2])`` images at
    once. ``steps`` >= 1; ``step_size`` >= 0; ``churn`` >= 0 (EDM's S_churn; the reference uses 40 at 300 steps);
    ``0 < sigma_min < sigma_max``, ``rho > 0``; ``x_init``: the start instead of ``sigma_max z`` (z from
    ``generator``); ``progress(done, steps)`` after each step. Runs on ``device`` (default: ``y``'s, else CPU);
    returns the final images, detached.
    """
    shape, sigmas = check_common(den, shape, steps, sigma_min, sigma_max, rho, generator, progress, dtype)
    step_size = check_weight("step_size", step_size, positive=False)
    churn = check_weight("churn", churn, positive=False)
    batch_dims = check_count("batch_dims", batch_dims, 0, len(shape) - 2)
    check_pair(A, y)
    if device is None:
        device = y.device if isinstance(y, torch.Tensor) else "cpu"
    if A is not None:
        check_measurement(A, y, shape, dtype)
    likelihood = A is not None and step_size > 0
    g = gamma_churn(churn, steps)
    x = start(shape, sigma_max, x_init, generator, dtype, device)
    for i in range(steps):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        s = s_cur * (1.0 + g)
        if g > 0:
            x = x + math.sqrt(s * s - s_cur * s_cur) * complex_randn(shape, generator, dtype, device)
        x = x.detach().requires_grad_(likelihood)
        with torch.set_grad_enabled(likelihood):
            d = denoise(den, x, s)
            if likelihood:
                sse = per_sample((y - A.forward(d)).abs().square(), batch_dims)
                (grad,) = torch.autograd.grad(sse.sum(), x)
        x_next = x.detach() + (s_next - s) / s * (x.detach() - d.detach())
        if likelihood:
            weight = step_size / sse.detach().sqrt().clamp_min(1e-30)
            x_next = x_next - broadcast_weights(weight, x_next.ndim) * grad
        x = x_next
        if progress is not None:
            progress(i + 1, steps)
    return x.detach()


def adps_posterior(den: ComplexDenoiser, A: LinearOperator | None, y: torch.Tensor | None,  # noqa: N803
                   shape: Sequence[int], *, samples: int, seed: int = 0, parallel: int | None = None,
                   batch_dims: int = 0, magnitude: bool = False, unbiased: bool = False,
                   progress: Progress | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and standard deviation of ``samples`` (K >= 2) exact A-DPS samples of one image or volume of
    ``shape`` (``(H, W)``, or ``(Z, H, W)`` with ``batch_dims`` independent leading axes of its own).

    The samples run ``parallel`` at a time (None: all) along a new leading axis (so ``adps_sample`` gets
    ``(k, *shape)`` and ``batch_dims + 1``), all from one generator seeded with ``seed``: the result depends on
    ``seed`` and ``parallel`` only. ``std = sqrt(mean_k |x_k - mean|^2)`` of the complex values (real and
    imaginary spread together; ``unbiased``: divide by K - 1); ``magnitude=True``: mean and std of ``|x_k|``
    instead. ``progress(done, total)`` counts steps over all batches; other keywords go to ``adps_sample``.
    """
    if "generator" in kwargs or "x_init" in kwargs:
        raise ValueError("adps_posterior draws its own starts: pass seed, not generator or x_init")
    shape = tuple(shape)
    steps = kwargs.get("steps", 100)

    def run(k: int, generator: torch.Generator, chunk_progress: Progress) -> torch.Tensor:
        return adps_sample(den, A, y, (k, *shape), batch_dims=batch_dims + 1, generator=generator,
                           progress=chunk_progress, **kwargs)

    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or batch_dims < 0:
        raise ValueError(f"batch_dims must be an integer >= 0, got {batch_dims!r}")
    device = kwargs.get("device") or (y.device if isinstance(y, torch.Tensor) else "cpu")
    return posterior_moments(run, samples=samples, parallel=parallel, seed=seed, steps=steps, device=device,
                             magnitude=magnitude, unbiased=unbiased, progress=progress)
