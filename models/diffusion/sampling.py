"""The reverse-diffusion loop every sampler here shares: denoise, make consistent with the data, step down.

Visiting the timesteps ``t_0 = T - 1 > t_1 > ... > t_{n-1} = 0`` of ``VPSchedule.timesteps(steps)``, with
``abar`` of the next timestep ``s`` (``abar = 1`` after the last), each step is::

    eps      = denoiser(x_t, t)                                    (all slices, batched)
    x0_hat   = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)         (Tweedie)
    x0_tilde = dc(x0_hat)                                          (where="x0": DDS)
    x_s      = sqrt(abar_s) x0_tilde + sqrt(1 - abar_s) (eta z + sqrt(1 - eta^2) eps),   z ~ N(0, I)
    x_s      = sqrt(abar_s) dc(x_s / sqrt(abar_s))                 (where="xt": DiffusionMBIR-style)

and the last step returns ``x0_tilde`` (``x_s`` with ``abar_s = 1``). A warm start (Chung et al., "Come-Closer-
Diffuse-Faster", CVPR 2022) begins lower, at ``t_0 = round(start (T - 1))`` with ``start < 1``, from an estimate
``x_w`` of the image noised to that level, ``x_{t_0} = sqrt(abar_{t_0}) x_w + sqrt(1 - abar_{t_0}) z``: the
steps are spent where the image's detail is decided, and the estimate (a classical reconstruction) stands in for
the coarse structure the skipped steps would have drawn. ``where="xt"`` is the literal VP form of
DiffusionMBIR's consistency on the noisy iterate; with a stateful ADMM-TV step it memorises the first steps' noise
(see ``models.diffusion.dds``), so the samplers there use ``where="x0"``. ``eps`` in the DDIM step is the network's,
not re-derived from ``x0_tilde`` (as in DDS), so the data-consistency change is carried to the next iterate.

``eta`` is in the DDS parametrisation of ``models.diffusion.schedule.ddim_step``: the fresh-noise fraction of the
next noise level. ``eta = 0`` is deterministic DDIM (the probability-flow ODE, consistent as ``steps`` grows).
``eta = 1`` there is NOT the DDPM ancestral sampler: it redraws all the noise around the posterior *mean*, so even
unconditionally the samples' spread shrinks at any number of steps. The ancestral (DDPM posterior) step is Song
et al.'s DDIM ``eta = 1``, ``sigma^2 = (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)``, which is the DDS
parametrisation's ``eta = sigma / sqrt(1 - abar_s) = sqrt((1 - abar_t / abar_s) / (1 - abar_t))``
(``ancestral_eta``); pass ``eta="ancestral"`` for it.

``corrector_snr`` adds a Langevin corrector after every step but the last (Song et al., ICLR 2021, the
predictor-corrector sampler DiffusionMBIR runs): at the next timestep ``s``, with ``alpha_s = abar_s / abar_{s-1}``
(``1 - beta_s``), ``score = -denoiser(x_s, s) / sqrt(1 - abar_s)``, ``z ~ N(0, I)`` and the step
``e = 2 alpha_s (snr ||z|| / ||score||)^2`` (norms per image, averaged)::

    x_s = x_s + e score + sqrt(2 e) z

one more network call per step. A Langevin step leaves the marginal at ``s`` in place, so it can only pull the
iterate back towards that marginal where the predictor's discretisation left it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from models.diffusion._validate import check_count, check_eta, check_shape
from models.diffusion.consistency import DataConsistency
from models.diffusion.denoiser import Denoiser, SliceBatched, as_volume_denoiser
from models.diffusion.schedule import VPSchedule, ddim_step, tweedie

Progress = Callable[[int, int], None]
Eta = float | Literal["ancestral"]


@dataclass(frozen=True)
class StepInfo:
    """What one step did: its index, timestep, ``abar_t``, the eta used, and the relative change the data
    consistency made, ``||dc(v) - v|| / ||v||`` (0 without data consistency)."""

    step: int
    t: int
    abar_t: float
    eta: float
    dc_change: float


def ancestral_eta(abar_t: float, abar_s: float) -> float:
    """The DDS-parametrised eta of the DDPM ancestral step from ``t`` to ``s < t``:
    ``sqrt((1 - abar_t / abar_s) / (1 - abar_t))`` (0 when ``abar_s = 1``, the last step returns ``x0``)."""
    if abar_s >= 1.0:
        return 0.0
    return math.sqrt(max(0.0, 1.0 - abar_t / abar_s) / (1.0 - abar_t))


def langevin_correct(x: torch.Tensor, eps: torch.Tensor, abar: float, alpha: float, snr: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """One Langevin corrector step at the noise level ``abar`` (module docstring), given the network's ``eps`` at
    ``x``; norms are taken per image (the last two axes) and averaged."""
    score = -eps / math.sqrt(1.0 - abar)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    per_image = (-1, -2)
    ratio = (torch.linalg.vector_norm(z, dim=per_image).mean()
             / torch.linalg.vector_norm(score, dim=per_image).mean().clamp_min(1e-30))
    step = 2.0 * alpha * float(snr * ratio) ** 2
    return x + step * score + math.sqrt(2.0 * step) * z


def _change(before: torch.Tensor, after: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(after - before) / torch.linalg.vector_norm(before).clamp_min(1e-30))


def diffusion_sample(denoiser: Denoiser | SliceBatched, schedule: VPSchedule, shape: Sequence[int], *,
                     steps: int = 50, eta: Eta = 0.85, consistency: DataConsistency | None = None,
                     where: Literal["x0", "xt"] = "x0", max_batch: int = 8,
                     generator: torch.Generator | None = None, progress: Progress | None = None,
                     x_init: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu", trace: list[StepInfo] | None = None,
                     last_consistency: bool = True, start: float = 1.0,
                     warm_start: torch.Tensor | None = None, corrector_snr: float | None = None) -> torch.Tensor:
    """Run the loop of the module docstring on a volume of ``shape`` and return the final ``x0_tilde``.

    ``last_consistency=False`` returns the last step's Tweedie estimate instead (the network's clean image
    after every earlier data-consistency step), without the final data fit, which carries the measurement's
    noise and undersampling streaks back into the image.

    ``denoiser``: a 2D ``Denoiser`` (wrapped in ``SliceBatched(denoiser, max_batch)``) or a volume denoiser
    already wrapped; ``consistency``: the data-consistency step (None: unconditional sampling), applied to the
    Tweedie estimate (``where="x0"``) or to the next iterate in image units (``where="xt"``); ``x_init``: the
    starting ``x_T`` (default standard normal from ``generator``); ``progress(done, steps)`` after each step;
    ``trace``: a list that receives one ``StepInfo`` per step; ``start`` in (0, 1] with ``warm_start`` (an image
    estimate of ``shape``, noised here) or ``x_init`` (already at the first timestep's noise level), one of them
    needed when ``start < 1``: the warm start of the module docstring; ``corrector_snr`` in (0, 1]: a Langevin
    corrector after every step but the last (module docstring; None: none). No autograd.
    """
    if not isinstance(schedule, VPSchedule):
        raise ValueError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
    steps = check_count("steps", steps, 1, schedule.num_train_timesteps)
    eta = check_eta(eta)
    shape = check_shape(shape)
    if where not in ("x0", "xt"):
        raise ValueError(f"where must be 'x0' or 'xt', got {where!r}")
    if progress is not None and not callable(progress):
        raise ValueError("progress must be a callable progress(done, total) or None")
    if corrector_snr is not None and not (isinstance(corrector_snr, float | int) and 0 < corrector_snr <= 1):
        raise ValueError(f"corrector_snr must be in (0, 1] or None, got {corrector_snr!r}")
    volume_denoiser = as_volume_denoiser(denoiser, max_batch)
    times = schedule.timesteps(steps, start)
    abars = schedule.alphas_cumprod
    if warm_start is None and x_init is None and float(start) < 1.0:
        raise ValueError(f"start {start:g} (below 1, the top of the schedule) needs a warm_start image to noise "
                         f"(or the noisy iterate x_init)")
    if x_init is not None:
        if warm_start is not None:
            raise ValueError("give x_init (the starting noisy iterate) or warm_start (an image to noise), not both")
        if tuple(x_init.shape) != shape:
            raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
        x = x_init.clone()
    else:
        x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        if warm_start is not None:
            if tuple(warm_start.shape) != shape:
                raise ValueError(f"warm_start must have shape {shape}, got {tuple(warm_start.shape)}")
            abar = float(abars[times[0]])
            x = abar ** 0.5 * warm_start.to(device=device, dtype=dtype) + (1.0 - abar) ** 0.5 * x
    with torch.no_grad():
        for k, t in enumerate(times):
            abar_t = float(abars[t])
            abar_s = float(abars[times[k + 1]]) if k + 1 < len(times) else 1.0
            step_eta = ancestral_eta(abar_t, abar_s) if eta == "ancestral" else float(eta)
            eps = volume_denoiser(x, t)
            x0 = tweedie(x, eps, abar_t)
            change = 0.0
            if consistency is not None and where == "x0" and (last_consistency or k + 1 < len(times)):
                x0_dc = consistency(x0)
                change = _change(x0, x0_dc) if trace is not None else 0.0
                x0 = x0_dc
            x = ddim_step(x0, eps, abar_s, step_eta, generator=generator)
            if consistency is not None and where == "xt":
                v = x / math.sqrt(abar_s)
                v_dc = consistency(v)
                change = _change(v, v_dc) if trace is not None else 0.0
                x = math.sqrt(abar_s) * v_dc
            if corrector_snr is not None and k + 1 < len(times):
                s = times[k + 1]
                alpha_s = abar_s / float(abars[s - 1]) if s > 0 else abar_s
                x = langevin_correct(x, volume_denoiser(x, s), abar_s, alpha_s, corrector_snr, generator)
            if trace is not None:
                trace.append(StepInfo(k, t, abar_t, step_eta, change))
            if progress is not None:
                progress(k + 1, len(times))
    return x
