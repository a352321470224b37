"""Fast A-DPS: an approximation of A-DPS without a gradient through the prior (DDS-style, in EDM / VE form).

``models.diffusion.adps`` is the exact A-DPS algorithm; its likelihood step back-propagates through the network,
which ONNX Runtime cannot do. This mode replaces that step by the Decomposed Diffusion Sampler's data consistency
(Chung et al., ICLR 2024) on the denoised image, so the prior is only ever evaluated (no autograd, any backend).
It approximates A-DPS: it samples the same prior over the same noise levels, but pulls towards the data by a few CG
steps instead of DPS's gradient, so its samples differ (in the Gaussian tests they fit the data more tightly and
spread less; ``tests/test_adps_sampler.py``).

Noise levels ``sigma_0 = sigma_max > ... > sigma_{n-1} = sigma_min``, ``sigma_n = 0`` (``karras_sigmas``); from
``x = sigma_max z``, step ``i``::

    D        = den(x, sigma_i)                                            (no autograd)
    x0~      = dc(D)                   e.g. ProximalConsistency: cg_iters CG steps on
                                       (I + gamma A^H A) x0~ = D + gamma A^H y, started at D
    eps      = (x - D) / sigma_i
    x_{i+1}  = x0~ + sigma_{i+1} (eta z + sqrt(1 - eta^2) eps)            (DDIM step, variance exploding)

and the result is the last ``x0~`` (``sigma_n = 0``), or the last ``D`` with ``last_consistency=False``. ``eta``
is DDS's fresh-noise fraction (0.85 by default; 0 is deterministic DDIM). ``eta="ancestral"`` takes the VE DDPM
posterior step, ``eta_i = sqrt(1 - sigma_{i+1}^2 / sigma_i^2)`` (then ``sqrt(1 - eta^2) = sigma_{i+1} /
sigma_i``), which samples the prior itself as the steps grow; a constant ``eta`` does not (see
``models.diffusion.sampling``).

Choosing ``gamma``: the proximal step acts at every step, so its pull accumulates (in the Gaussian test 100 steps
with ``gamma = 0.5`` behave like 50 with 1). With ``gamma = 1 / s^2`` (the noise-variance rule that suits a pure
masked Fourier ``A``) and a SENSE ``A`` whose ``A^H A`` has small eigenvalues, the samples fit the noise in the weakly
measured directions and land farther from the posterior mean than the prior mean does; ``gamma`` of about
``1 / ||A^H A||`` (1 for maps with ``sum_c |S_c|^2 = 1``) at 50 steps did well there (``tests/test_adps_sampler.py``).

``dc`` is ``ProximalConsistency(A, y, gamma, cg_iters)`` (built from ``gamma``), or any ``DataConsistency`` object
passed as ``consistency``, e.g. ``ADMMTVConsistency(A, y, lam, rho, tv_axis=-3)`` for a multi-slice volume
``(Z, H, W)`` (TV along z joins the slices that the 2D prior denoises one by one; it works on complex volumes:
``soft_threshold`` shrinks magnitudes). Such objects keep state across the steps of one run: make a fresh one per
run (``adps_fast_posterior`` takes a factory for that).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from models.diffusion._edm_sampling import (
    ComplexDenoiser,
    Progress,
    check_common,
    check_pair,
    complex_randn,
    denoise,
    posterior_moments,
    start,
)
from models.diffusion._validate import check_count, check_eta, check_measurement
from models.diffusion.consistency import DataConsistency, ProximalConsistency
from models.diffusion.edm import RHO, SIGMA_MAX, SIGMA_MIN
from models.diffusion.sampling import Eta
from models.physics.linop import LinearOperator

__all__ = ["ConsistencyFactory", "adps_fast_posterior", "adps_fast_sample", "ve_ancestral_eta"]

ConsistencyFactory = Callable[[int], DataConsistency]
"""``make(batch_dims) -> DataConsistency``: a fresh consistency step whose first ``batch_dims`` axes are independent
problems (``adps_fast_posterior`` adds one for its sample axis)."""


def ve_ancestral_eta(sigma: float, sigma_next: float) -> float:
    """The eta of the variance-exploding DDPM posterior step from ``sigma`` to ``sigma_next < sigma``:
    ``sqrt(1 - sigma_next^2 / sigma^2)``."""
    return math.sqrt(max(0.0, 1.0 - (sigma_next / sigma) ** 2))


def _consistency(A: LinearOperator | None, y: torch.Tensor | None, gamma: float | None,  # noqa: N803
                 cg_iters: int, consistency: DataConsistency | None, batch_dims: int) -> DataConsistency | None:
    if consistency is not None:
        if not callable(consistency):
            raise ValueError(f"consistency must be a DataConsistency (callable), got {type(consistency).__name__}")
        if gamma is not None:
            raise ValueError("give gamma (the proximal consistency) or a consistency object, not both")
        return consistency
    if A is None:
        if gamma is not None:
            raise ValueError("gamma needs a measurement: give A and y")
        return None
    if gamma is None:
        raise ValueError("the proximal consistency needs gamma > 0 (see the module docstring), or pass consistency")
    return ProximalConsistency(A, y, gamma=gamma, cg_iters=cg_iters, batch_dims=batch_dims)


def adps_fast_sample(den: ComplexDenoiser, A: LinearOperator | None, y: torch.Tensor | None,  # noqa: N803
                     shape: Sequence[int], *, steps: int = 50, eta: Eta = 0.85, gamma: float | None = None,
                     cg_iters: int = 5, consistency: DataConsistency | None = None, batch_dims: int = 1,
                     last_consistency: bool = True, max_batch: int | None = None, sigma_min: float = SIGMA_MIN,
                     sigma_max: float = SIGMA_MAX, rho: float = RHO, generator: torch.Generator | None = None,
                     progress: Progress | None = None, x_init: torch.Tensor | None = None,
                     dtype: torch.dtype = torch.complex64, device: torch.device | str | None = None) -> torch.Tensor:
    """Fast, approximate A-DPS (module docstring) of complex images or volumes of ``shape`` ``(..., H, W)``.

    Data consistency: ``gamma`` > 0 builds ``ProximalConsistency(A, y, gamma, cg_iters, batch_dims)`` (the first
    ``batch_dims`` axes are independent CG systems; default 1: ``(K, H, W)`` is K images); or pass a fresh
    ``consistency`` object instead (then ``A``, ``y`` only check the shapes and may be None); neither and no
    ``A``, ``y``: unconditional sampling. ``eta`` in [0, 1] or ``"ancestral"``; ``max_batch``: images per
    denoiser call (None: all); ``x_init``: the start instead of ``sigma_max z``; ``progress(done, steps)``.
    Runs without autograd on ``device`` (default: ``y``'s, else CPU); returns the last ``x0~`` (or ``D``).
    """
    shape, sigmas = check_common(den, shape, steps, sigma_min, sigma_max, rho, generator, progress, dtype)
    eta = check_eta(eta)
    batch_dims = check_count("batch_dims", batch_dims, 0, len(shape) - 2)
    cg_iters = check_count("cg_iters", cg_iters, 1, 1000)
    if max_batch is not None:
        check_count("max_batch", max_batch, 1, 1_000_000)
    check_pair(A, y)
    if device is None:
        device = y.device if isinstance(y, torch.Tensor) else "cpu"
    if A is not None:
        check_measurement(A, y, shape, dtype)
    dc = _consistency(A, y, gamma, cg_iters, consistency, batch_dims)
    x = start(shape, sigma_max, x_init, generator, dtype, device)
    with torch.no_grad():
        for i in range(steps):
            s, s_next = sigmas[i], sigmas[i + 1]
            d = denoise(den, x, s, max_batch)
            last = i + 1 == steps
            x0 = dc(d) if dc is not None and (last_consistency or not last) else d
            if last:
                x = x0
            else:
                e = ve_ancestral_eta(s, s_next) if eta == "ancestral" else float(eta)
                noise = complex_randn(shape, generator, dtype, device) if e > 0 else 0.0
                x = x0 + s_next * (e * noise + math.sqrt(1.0 - e * e) * (x - d) / s)
            if progress is not None:
                progress(i + 1, steps)
    return x


def adps_fast_posterior(den: ComplexDenoiser, A: LinearOperator | None, y: torch.Tensor | None,  # noqa: N803
                        shape: Sequence[int], *, samples: int, seed: int = 0, parallel: int | None = None,
                        batch_dims: int = 0, make_consistency: ConsistencyFactory | None = None,
                        magnitude: bool = False, unbiased: bool = False, progress: Progress | None = None,
                        **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and standard deviation of ``samples`` (K >= 2) fast A-DPS samples of one image or volume of
    ``shape`` (``batch_dims`` independent leading axes of its own), as ``models.diffusion.adps.adps_posterior``
    does for the exact sampler: ``parallel`` at a time along a new leading axis, one generator seeded with
    ``seed``, ``std = sqrt(mean_k |x_k - mean|^2)`` (``unbiased``: K - 1; ``magnitude``: of ``|x_k|``).

    ``make_consistency(batch_dims)`` builds a fresh consistency step for every batch (it is called with
    ``batch_dims + 1``), e.g. ``lambda b: ADMMTVConsistency(A, y, lam=..., rho=..., tv_axis=-3, batch_dims=b)``;
    None: the proximal one from ``gamma``. Other keywords go to ``adps_fast_sample``.
    """
    for key in ("generator", "x_init", "consistency"):
        if key in kwargs:
            raise ValueError(f"adps_fast_posterior takes no {key} (seed draws the starts; "
                             "make_consistency builds the consistency step of each batch)")
    if make_consistency is not None and not callable(make_consistency):
        raise ValueError("make_consistency must be a callable make_consistency(batch_dims) or None")
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or batch_dims < 0:
        raise ValueError(f"batch_dims must be an integer >= 0, got {batch_dims!r}")
    shape = tuple(shape)
    steps = kwargs.get("steps", 50)

    def run(k: int, generator: torch.Generator, chunk_progress: Progress) -> torch.Tensor:
        dc = None if make_consistency is None else make_consistency(batch_dims + 1)
        return adps_fast_sample(den, A, y, (k, *shape), batch_dims=batch_dims + 1, consistency=dc,
                                generator=generator, progress=chunk_progress, **kwargs)

    device = kwargs.get("device") or (y.device if isinstance(y, torch.Tensor) else "cpu")
    return posterior_moments(run, samples=samples, parallel=parallel, seed=seed, steps=steps, device=device,
                             magnitude=magnitude, unbiased=unbiased, progress=progress)
