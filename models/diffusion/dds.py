"""2D-prior 3D reconstruction: the Decomposed Diffusion Sampler (DDS) and a DiffusionMBIR-style comparison mode.

A 2D diffusion prior denoises every slice of the volume; a model-based step joins the slices and fits the data.
Per step of ``models.diffusion.sampling.diffusion_sample`` (``A`` a ``LinearOperator`` on the volume, ``y`` the
measurement in the prior's normalised units, e.g. a sinogram of ``HU / 1000`` images):

* ``mode="dds"`` (Chung et al., ICLR 2024): ``x0_hat`` by Tweedie for all slices, then one ADMM-TV(z) iteration
  of ``min_x 1/2 ||A x - y||^2 + lam ||D_z x||_1`` (``ADMMTVConsistency``: ``cg_iters`` CG steps on
  ``(A^T A + rho D_z^T D_z) x = A^T y + rho D_z^T (z - u)`` started at ``x0_hat``, ``z = soft(D_z x + u, lam/rho)``,
  ``u += D_z x - z``; z and u persist across steps), then the DDIM step with ``eta`` (DDS's 0.85) and the
  network's ``eps``. One network call per slice and step (50 steps: 50 NFE); the last step returns ``x0_tilde``.
  ``lam = 0``: plain CG consistency ``A^T A x = A^T y`` from ``x0_hat``. ``gamma`` given: the MRI form
  ``(I + gamma A^H A) x = x0_hat + gamma A^H y`` (``ProximalConsistency``) instead (needs ``lam = 0``).
* ``mode="mbir"`` (after DiffusionMBIR, Chung et al., CVPR 2023), for comparisons at many steps (300-1000):
  the same ADMM-TV(z) iteration on ``x0_hat``, then the DDPM ancestral step (``eta="ancestral"``, i.e. Song et
  al.'s DDIM eta = 1, the step that samples the prior correctly as the steps grow; DDS's eta = 1 does not, see
  ``models.diffusion.sampling``). What differs from the original: DiffusionMBIR is a VE-SDE predictor-corrector
  sampler (reverse-diffusion predictor plus one Langevin corrector: 2 network calls per step, 2000 steps, about
  4000 NFE) that runs its ADMM iteration (1 CG step) on the noisy iterate ``x0 + sigma z`` itself; here the prior
  is VP with at most ``T = 1000`` steps and 1 network call per step (2 with ``corrector_snr``, the original's
  Langevin corrector: ``models.diffusion.sampling``), ``cg_iters`` CG steps are taken (pass 1 for
  the original's count), ``D_z`` has a Neumann boundary where the reference code's is periodic, and the
  consistency acts on Tweedie's estimate. The literal translation, ADMM on the VE-equivalent iterate
  ``x_s / sqrt(abar_s)`` (``diffusion_sample(..., where="xt")``), is unstable with z and u kept across steps:
  the first steps' noise (about 150 per pixel in image units at ``abar = 4e-5``) is memorised by ``z`` and
  frozen into the volume.

Step counts and the persistent z, u. With one ADMM iteration per step the TV acts through the state carried
across steps: each step pulls ``D_z x`` towards the previous ``z`` and shrinks ``z`` by ``lam / rho``, while the
DDIM step injects new, slice-independent noise. So TV(z) works at the step and CG counts it was designed for and
degrades with more (the paper saw 10 CG steps lose 1.4 dB). Measured on a (4, 16, 16) test volume (slices = one
Gaussian-prior draw plus 0.02 noise, z-TV 0.022; 6 views, s = 0.1, lam 0.04, rho 10, ``||A^T A|| = 92``; 8 seeds),
z-TV / relative error with TV against without: dds 50 x 5 CG 0.024 / 0.243 against 0.074 / 0.271; dds 100 x 5
0.045 / 0.286 (already worse); dds 300 x 5 0.22 / 1.01 (diverged); mbir 600 x 1 0.036 / 0.245 against
0.087 / 0.287; mbir 600 x 5 0.058 / 0.425. The literal ``where="xt"`` mbir (one seed), 300 x 1: 0.63 / 1.09;
300 x 5: 13 / 34.
Use ``mode="dds"`` near 50 steps and ``mode="mbir"`` with ``cg_iters=1``.

``start < 1`` with ``warm_start`` (e.g. the ADMM-TV volume): the warm start of ``models.diffusion.sampling``, the
``steps`` spread over timesteps ``round(start (T - 1))..0`` instead of the whole schedule.

``dds_posterior`` runs several seeds (batched along a new leading axis) and returns their mean and standard
deviation, the uncertainty map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from models.diffusion._validate import check_count, check_eta, check_measurement, check_shape, check_weight
from models.diffusion.consistency import ADMMTVConsistency, DataConsistency, ProximalConsistency
from models.diffusion.denoiser import Denoiser, SliceBatched, as_volume_denoiser
from models.diffusion.sampling import Eta, Progress, StepInfo, diffusion_sample
from models.diffusion.schedule import VPSchedule
from models.physics.linop import LinearOperator

Mode = Literal["dds", "mbir"]


def _normalised_axis(tv_axis: int, shape: tuple[int, ...]) -> int:
    """``tv_axis`` counted from the end; it must be an axis before ``(H, W)``."""
    n = len(shape)
    if isinstance(tv_axis, bool) or not isinstance(tv_axis, int) or not -n <= tv_axis < n - 2:
        raise ValueError(f"tv_axis must be an integer in [{-n}, {n - 3}] (an axis before H, W of shape {shape}), "
                         f"got {tv_axis!r}")
    return tv_axis - n if tv_axis >= 0 else tv_axis


def dds_sample(denoiser: Denoiser | SliceBatched, schedule: VPSchedule, A: LinearOperator,  # noqa: N803
               y: torch.Tensor, shape: Sequence[int], *, steps: int = 50, cg_iters: int = 5, lam: float = 0.04,
               rho: float = 10.0, eta: Eta | None = None, tv_axis: int = 0, mode: Mode = "dds",
               admm_iters_per_step: int = 1, gamma: float | None = None, batch_dims: int = 0, max_batch: int = 8,
               generator: torch.Generator | None = None, progress: Progress | None = None,
               x_init: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
               trace: list[StepInfo] | None = None, last_consistency: bool = True, start: float = 1.0,
               warm_start: torch.Tensor | None = None, corrector_snr: float | None = None) -> torch.Tensor:
    """Reconstruct a volume of ``shape`` (e.g. ``(Z, H, W)``) from ``y = A x + noise`` (module docstring).

    ``steps`` in [1, T]; ``cg_iters`` in [1, 1000]; ``lam >= 0`` (TV weight along ``tv_axis``, absolute);
    ``rho > 0`` (ADMM penalty, absolute); ``eta`` in [0, 1] or ``"ancestral"`` (None: 0.85 for ``"dds"``,
    ``"ancestral"`` for ``"mbir"``); ``admm_iters_per_step`` in [1, 100]; ``gamma > 0`` or None;
    ``batch_dims``: leading axes of ``shape`` that index independent problems (``A`` acts on each alone);
    ``max_batch``: slices per denoiser call; ``last_consistency=False``: return the last Tweedie estimate
    (``diffusion_sample``); ``start`` in (0, 1], below 1 with ``warm_start`` (an image of ``shape``): the warm
    start; ``corrector_snr``: a Langevin corrector after each step (``diffusion_sample``; None: none). Runs on
    ``y``'s device; returns the volume (dtype ``dtype``).
    """
    shape = check_shape(shape)
    if mode not in ("dds", "mbir"):
        raise ValueError(f"mode must be 'dds' or 'mbir', got {mode!r}")
    eta = check_eta(eta if eta is not None else (0.85 if mode == "dds" else "ancestral"))
    check_count("steps", steps, 1, schedule.num_train_timesteps)
    check_count("batch_dims", batch_dims, 0, len(shape) - 2)
    lam = check_weight("lam", lam, positive=False)
    check_weight("rho", rho, positive=True)
    axis = _normalised_axis(tv_axis, shape)
    check_measurement(A, y, shape, dtype)
    if gamma is not None:
        if lam > 0:
            raise ValueError(f"gamma (the proximal MRI consistency) takes no TV term: lam must be 0, got {lam}")
        dc: DataConsistency = ProximalConsistency(A, y, gamma=gamma, cg_iters=cg_iters, batch_dims=batch_dims)
    else:
        if lam > 0 and len(shape) + axis < batch_dims:
            raise ValueError(f"tv_axis {tv_axis} is one of the batch_dims={batch_dims} independent axes")
        dc = ADMMTVConsistency(A, y, lam=lam, rho=rho, cg_iters=cg_iters, tv_axis=axis,
                               admm_iters=admm_iters_per_step, batch_dims=batch_dims)
    return diffusion_sample(denoiser, schedule, shape, steps=steps, eta=eta, consistency=dc,
                            where="x0", max_batch=max_batch, generator=generator,
                            progress=progress, x_init=x_init, dtype=dtype, device=y.device, trace=trace,
                            last_consistency=last_consistency, start=start, warm_start=warm_start,
                            corrector_snr=corrector_snr)


def dds_posterior(denoiser: Denoiser | SliceBatched, schedule: VPSchedule, A: LinearOperator,  # noqa: N803
                  y: torch.Tensor, shape: Sequence[int], *, samples: int, seed: int = 0, parallel: int = 1,
                  tv_axis: int = 0, batch_dims: int = 0, progress: Progress | None = None,
                  **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (unbiased, the uncertainty map) of ``samples`` runs of ``dds_sample``.

    Runs are batched ``parallel`` at a time along a new leading axis (``A`` must act on leading axes one by one,
    as ``CTProjector`` and ``SenseOperator`` do), each an independent problem; the random numbers come from one
    generator seeded with ``seed``, so the result depends on ``seed`` and ``parallel`` only.
    ``progress(done, total)`` counts steps over all batches; ``warm_start`` (of ``shape``) starts every run; other
    keywords go to ``dds_sample``.
    """
    samples = check_count("samples", samples, 2, 100_000)
    parallel = check_count("parallel", parallel, 1, 100_000)
    shape = check_shape(shape)
    axis = _normalised_axis(tv_axis, shape)
    check_count("batch_dims", batch_dims, 0, len(shape) - 2)
    steps = kwargs.get("steps", 50)
    warm_start = kwargs.pop("warm_start", None)
    if warm_start is not None and tuple(warm_start.shape) != shape:
        raise ValueError(f"warm_start must have shape {shape}, got {tuple(warm_start.shape)}")
    generator = torch.Generator(device=y.device).manual_seed(int(seed))
    chunks = [min(parallel, samples - start) for start in range(0, samples, parallel)]
    total, done = len(chunks) * steps, 0

    def chunk_progress(step: int, _steps: int) -> None:
        if progress is not None:
            progress(done + step, total)

    denoiser = as_volume_denoiser(denoiser, kwargs.pop("max_batch", 8))
    acc = acc2 = None
    for k in chunks:
        x = dds_sample(denoiser, schedule, A, y, (k, *shape), tv_axis=axis, batch_dims=batch_dims + 1,
                       generator=generator, progress=chunk_progress,
                       warm_start=None if warm_start is None else warm_start.expand(k, *shape), **kwargs)
        x64 = x.to(torch.complex128 if x.is_complex() else torch.float64)
        s1, s2 = x64.sum(0), (x64.abs() ** 2).sum(0)
        acc, acc2 = (s1, s2) if acc is None else (acc + s1, acc2 + s2)
        done += steps
    assert acc is not None and acc2 is not None
    mean = acc / samples
    var = ((acc2 - samples * mean.abs() ** 2) / (samples - 1)).clamp_min(0)
    return mean.to(x.dtype), var.sqrt().to(x.real.dtype)
