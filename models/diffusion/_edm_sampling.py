"""What the two A-DPS samplers (``models.diffusion.adps``, ``models.diffusion.adps_fast``) share: the complex-image
denoiser protocol, argument checks, the start ``x = sigma_max z``, the batched denoiser call, and the Monte Carlo
moments of their posterior functions.

Complex noise ``z`` is standard normal in each real channel (``z = n_r + i n_i``), the EDM convention of
``models.diffusion.edm``: ``E |z|^2 = 2`` per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from models.diffusion._validate import check_count, check_shape, check_weight
from models.diffusion.edm import karras_sigmas

Progress = Callable[[int, int], None]


class ComplexDenoiser(Protocol):
    """``D = den(x, sigma)``: ``x`` complex ``(N, H, W)`` at the noise level ``sigma`` (a float, one for the batch),
    ``D`` the posterior mean ``E[x0 | x0 + sigma z = x]``, complex ``(N, H, W)``. Autograd must pass through it for
    the exact A-DPS sampler."""

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor: ...


def check_common(den: object, shape: Sequence[int], steps: int, sigma_min: float, sigma_max: float, rho: float,
                 generator: object, progress: object, dtype: torch.dtype) -> tuple[tuple[int, ...], list[float]]:
    """Validate what both samplers take; returns the shape as a tuple and the ``steps + 1`` noise levels."""
    if not callable(den):
        raise ValueError(f"den must be a callable den(x, sigma), got {type(den).__name__}")
    shape = check_shape(shape)
    steps = check_count("steps", steps, 1, 100_000)
    sigma_min = check_weight("sigma_min", sigma_min, positive=True)
    sigma_max = check_weight("sigma_max", sigma_max, positive=True)
    rho = check_weight("rho", rho, positive=True)
    if sigma_min >= sigma_max:
        raise ValueError(f"need sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if progress is not None and not callable(progress):
        raise ValueError("progress must be a callable progress(done, total) or None")
    if not isinstance(dtype, torch.dtype) or not dtype.is_complex:
        raise ValueError(f"dtype must be a complex torch dtype, got {dtype!r}")
    return shape, karras_sigmas(steps, sigma_min, sigma_max, rho)


def check_pair(A: object, y: object) -> None:  # noqa: N803 - math name
    if (A is None) != (y is None):
        raise ValueError("give both A and y (posterior sampling) or neither (unconditional sampling)")


def complex_randn(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype,
                  device: torch.device | str) -> torch.Tensor:
    """Standard normal in each real channel, ``(2, *shape)`` draws from ``generator`` as real then imaginary part."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    g = torch.randn((2, *shape), generator=generator, dtype=real, device=device)
    return torch.complex(g[0], g[1])


def start(shape: tuple[int, ...], sigma_max: float, x_init: torch.Tensor | None, generator: torch.Generator | None,
          dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``x_init`` (a copy, in ``dtype``) or ``sigma_max z``."""
    if x_init is None:
        return sigma_max * complex_randn(shape, generator, dtype, device)
    if not isinstance(x_init, torch.Tensor) or tuple(x_init.shape) != shape:
        got = tuple(x_init.shape) if isinstance(x_init, torch.Tensor) else type(x_init).__name__
        raise ValueError(f"x_init must be a tensor of shape {shape}, got {got}")
    return x_init.to(device=device, dtype=dtype).clone()


def denoise(den: ComplexDenoiser, x: torch.Tensor, sigma: float, max_batch: int | None = None) -> torch.Tensor:
    """``den`` on every ``(H, W)`` image of ``x`` ``(..., H, W)``, at most ``max_batch`` images a call (None: all
    at once); autograd is kept if enabled."""
    h, w = x.shape[-2:]
    flat = x.reshape(-1, h, w)
    size = flat.shape[0] if max_batch is None else max_batch
    parts = []
    for lo in range(0, flat.shape[0], size):
        chunk = flat[lo:lo + size]
        out = den(chunk, sigma)
        if not isinstance(out, torch.Tensor) or out.shape != chunk.shape or not out.is_complex():
            got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the denoiser returned {got} for a complex input of shape {tuple(chunk.shape)}")
        parts.append(out.to(x.dtype))
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).reshape(x.shape)


def posterior_moments(run: Callable[[int, torch.Generator, Progress], torch.Tensor], *, samples: int,
                      parallel: int | None, seed: int, steps: int, device: torch.device | str, magnitude: bool,
                      unbiased: bool, progress: Progress | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over ``samples`` draws of ``run(k, generator, progress) -> (k, ...)``, ``k`` at
    most ``parallel`` a call, all from one generator seeded with ``seed``.

    ``std = sqrt(sum_k |x_k - mean|^2 / (K - ddof))`` per pixel (complex values: real and imaginary spread
    together), ``ddof = 1`` if ``unbiased`` else 0; ``magnitude``: the same for ``|x_k|`` (real mean)."""
    samples = check_count("samples", samples, 2, 1_000_000)
    parallel = samples if parallel is None else check_count("parallel", parallel, 1, 1_000_000)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if progress is not None and not callable(progress):
        raise ValueError("progress must be a callable progress(done, total) or None")
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = [min(parallel, samples - lo) for lo in range(0, samples, parallel)]
    total, done = len(chunks) * steps, 0

    def chunk_progress(step: int, _steps: int) -> None:
        if progress is not None:
            progress(done + step, total)

    acc = acc2 = None
    out_dtype = None
    for k in chunks:
        x = run(k, generator, chunk_progress).detach()
        x = x.abs() if magnitude else x
        out_dtype = x.dtype
        x64 = x.to(torch.complex128 if x.is_complex() else torch.float64)
        s1, s2 = x64.sum(0), x64.abs().square().sum(0)
        acc, acc2 = (s1, s2) if acc is None else (acc + s1, acc2 + s2)
        done += steps
    assert acc is not None and acc2 is not None and out_dtype is not None
    mean = acc / samples
    var = ((acc2 - samples * mean.abs().square()) / (samples - (1 if unbiased else 0))).clamp_min(0)
    real = torch.float64 if out_dtype in (torch.float64, torch.complex128) else torch.float32
    return mean.to(out_dtype), var.sqrt().to(real)


def per_sample(values: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """Sum of ``values`` over all axes after the first ``batch_dims`` (a scalar tensor when ``batch_dims = 0``)."""
    return values.sum(dim=tuple(range(batch_dims, values.ndim)))


def broadcast_weights(w: torch.Tensor, ndim: int) -> torch.Tensor:
    """``w`` of shape ``batch`` reshaped to broadcast over a tensor of ``ndim`` axes with that leading batch."""
    return w.reshape(*w.shape, *([1] * (ndim - w.ndim)))


def gamma_churn(churn: float, steps: int) -> float:
    """Karras et al.'s churn factor ``min(S_churn / steps, sqrt(2) - 1)``."""
    return min(churn / steps, math.sqrt(2.0) - 1.0)
