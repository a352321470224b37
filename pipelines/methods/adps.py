"""adps: Ambient Diffusion Posterior Sampling (Aali et al. 2024) for undersampled multi-coil MRI, with an uncertainty
map (pipeline ``mri-adps``).

The prior is a zoo model of kind ``mri-prior``: by default the ambient prior trained from 4x-undersampled k-space
only (``mri-prior-ambient-brain-sim``); ``mri-prior-full-brain-sim`` was trained from fully sampled k-space. Each
slice is prepared as the prior was trained (``pipelines.methods._mri_prior``: ACS maps and calibration scale from the
slice's own centre lines) and sampled on its own (a 2D prior; no coupling along z).

Two modes (``models.diffusion``'s docstrings say what each computes):

* ``adps``: exact A-DPS, the EDM Euler sampler with DPS's likelihood step, whose gradient goes through the network
  by autograd: the torch engine only. Default 100 steps, each a forward and a backward pass (the reference runs
  300). Measured on a busy 2-core CPU, one 128 x 128 slice: 16 s for one draw of 50 steps, so about 2 minutes a
  slice at the defaults (4 draws); the fast mode on ONNX Runtime took 21 s for 2 draws of 50 steps.
* ``fast``: the gradient-free approximation (DDS-style proximal data consistency): any engine; on ONNX Runtime
  it is the serving path. Default 50 steps. Its weight ``gamma`` defaults to the prior card's ``sampler_defaults``
  (the value ``benchmarks/mri_adps_tune.py`` chose on the validation set, unless the card holds another and says
  why: the ambient prior keeps 1, where its out-of-distribution flag was validated), else to ``1 / ||A^H A||``,
  which is 1 for ACS maps with ``sum_c |S_c|^2 = 1`` and a 0/1 mask.

3D (fast mode, ``tv_z`` set): the slices are reconstructed together as one volume, the prior denoising every slice
at each step and the data step one ADMM iteration with total variation along z (``ADMMTVConsistency``, the DDS
sampler's), the slices sharing one scale (the median of their calibration scales).

``mode`` left null is ``adps`` on the torch engine and ``fast`` on ONNX (what the service runs unless a job asks for
``engine: torch``). Settings of the other mode are refused rather than ignored. Neither mode samples the posterior
exactly (DPS's likelihood step is a heuristic), so the spread is an uncertainty indicator, not a calibrated
posterior std (``tests/test_adps_sampler.py`` compares both with a Gaussian prior's exact posterior).

Output: ``samples`` draws per slice from seeded noise; the volume is their complex mean (written as its magnitude,
like every MRI method) and, with more than one draw, ``volume.uncertainty`` is the per-pixel standard deviation of
the complex draws, ``sqrt(sum_k |x_k - mean|^2 / (K - 1))`` (the real and imaginary spread together; it bounds the
spread of the magnitudes, ``| |x_k| - |m| | <= |x_k - m|``), in the image's units. No quality bar is claimed here:
the exact mode's defaults are the reference's, not tuned on this data.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from models.diffusion.adps import adps_posterior, adps_sample
from models.diffusion.adps_fast import adps_fast_posterior, adps_fast_sample
from models.diffusion.edm import DEFAULT_MRI_PRIOR_CONFIG
from models.physics.mri.sense import SenseOperator
from models.physics.shapes import center_crop
from pipelines.data import ImageVolume, InputError, MRIAcquisition
from pipelines.methods._learned import DEFAULT_PROVIDERS, ZooModelParams
from pipelines.methods._mri_prior import (
    PRIOR_KIND,
    further_mask,
    load_prior,
    prepare_slice,
    prior_denoiser,
    prior_info,
    size_multiple,
)
from pipelines.reconstructors import SERVICE, LearnedModel, Method, Progress, in_stages, register
from pipelines.sampling import acquisition_mask

Mode = Literal["adps", "fast"]
STEPS = {"adps": 100, "fast": 50}
DEFAULTS: dict[str, Any] = {"step_size": 1.0, "churn": 0.0, "gamma": 1.0, "eta": 0.85, "cg_iterations": 5,
                            "tv_z": None}
MODE_OF = {"step_size": "adps", "churn": "adps", "gamma": "fast", "eta": "fast", "cg_iterations": "fast",
           "tv_z": "fast"}
VOLUME_RHO = 1.0  # the z-TV ADMM penalty: ||A^H A|| = 1 for ACS maps and a 0/1 mask
WHY_TORCH = ("exact A-DPS takes its likelihood step's gradient through the network by autograd, which an ONNX "
             "Runtime session cannot give: use engine torch, or mode fast (the gradient-free approximation the "
             "ONNX engine runs)")


def mode_for(engine: str | None, mode: str | None) -> str:
    """The mode that runs: the one asked for, else ``adps`` on the torch engine and ``fast`` on ONNX."""
    return mode or ("fast" if engine == "onnx" else "adps")


class ADPSParams(ZooModelParams):
    engine: Literal["torch", "onnx"] = Field("torch", description="torch module or ONNX Runtime session (onnx: "
                                             "mode fast only)", json_schema_extra=SERVICE)
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:(0|[1-9][0-9]?))?)$", description="torch device",
                        json_schema_extra={**SERVICE, "allowed": "cpu, cuda or cuda:N"})
    mode: Mode | None = Field(None, description="adps: exact A-DPS, gradient through the prior (torch engine); "
                              "fast: gradient-free approximation (any engine). null: adps on torch, fast on onnx")
    steps: int | None = Field(None, ge=1, le=1000, description="noise levels, one network call per draw each (null: "
                              f"{STEPS['adps']} for adps, {STEPS['fast']} for fast)")
    step_size: float | None = Field(None, ge=0, le=100, description="adps: the likelihood step, in image units "
                                    f"(null: {DEFAULTS['step_size']:g}, the reference's)")
    churn: float | None = Field(None, ge=0, le=100, description="adps: EDM's S_churn, extra noise per step (null: 0)")
    gamma: float | None = Field(None, gt=0, le=100, description="fast: proximal data-consistency weight (null: the "
                                "prior's default, its card's sampler_defaults; else 1 = 1/||A^H A|| for maps with "
                                "sum |S|^2 = 1)")
    eta: float | None = Field(None, ge=0, le=1, description=f"fast: fresh-noise fraction per step (null: "
                              f"{DEFAULTS['eta']:g})")
    cg_iterations: int | None = Field(None, ge=1, le=50, description=f"fast: CG steps per data-consistency update "
                                      f"(null: {DEFAULTS['cg_iterations']})")
    tv_z: float | None = Field(None, ge=0, le=10, description="fast: reconstruct the slices together as one volume, "
                               "the data step an ADMM iteration with total variation along z of this weight (images "
                               "scaled to about 1); null: slice by slice")
    samples: int = Field(4, ge=1, le=32, description="draws per slice: the image is their mean, their standard "
                         "deviation the uncertainty map (1: no map; costs samples x the time)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the draws' noise (and an ambient prior's sub-mask)")
    max_batch: int = Field(8, ge=1, le=256, description="images per network call (memory budget): draws of a slice "
                           "run this many at a time")
    kind: ClassVar[str] = PRIOR_KIND

    @field_validator("mode")
    @classmethod
    def _engine_fits(cls, mode: str | None, info: ValidationInfo) -> str | None:
        if mode == "adps" and info.data.get("engine") == "onnx":
            raise ValueError(WHY_TORCH)
        return mode

    @field_validator("step_size", "churn", "gamma", "eta", "cg_iterations", "tv_z")
    @classmethod
    def _of_the_mode(cls, value: Any, info: ValidationInfo) -> Any:
        """A setting of the mode that does not run is refused: it would silently change nothing."""
        running = mode_for(info.data.get("engine"), info.data.get("mode"))
        owner = MODE_OF[str(info.field_name)]
        if value is not None and owner != running:
            why = "" if info.data.get("mode") else f" (mode null runs {running} on engine {info.data.get('engine')})"
            raise ValueError(f"it is a setting of mode {owner}, and mode {running} runs{why}")
        return value


MODEL = LearnedModel(PRIOR_KIND, "mri-prior-ambient-brain-sim", dict(DEFAULT_MRI_PRIOR_CONFIG))


def prior_defaults(card: dict[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` with the settings the prior's card holds in ``sampler_defaults`` (chosen for that prior on the
    validation set by ``benchmarks/mri_adps_tune.py --write-cards``, or ``held`` at another value for the reason
    given there). ``ValueError`` for an unknown or bad one."""
    tuned = {k: v for k, v in (card.get("sampler_defaults") or {}).items() if k not in ("tuned", "held")}
    unknown = sorted(set(tuned) - set(DEFAULTS))
    if unknown or not all(isinstance(v, int | float) and v > 0 for v in tuned.values()):
        raise ValueError(f"model {card['id']!r}: its card's sampler_defaults {tuned} are not positive values of "
                         f"{', '.join(DEFAULTS)}")
    return {**DEFAULTS, **tuned}


def _mode_settings(mode: str) -> list[str]:
    return [n for n, owner in MODE_OF.items() if owner == mode]


def _settings(params: ADPSParams, mode: str, card: dict[str, Any]) -> dict[str, Any]:
    """The sampler settings that run: the ones given, the prior's defaults for the rest (``prior_defaults``)."""
    defaults = prior_defaults(card)
    chosen = {n: getattr(params, n) if getattr(params, n) is not None else defaults[n] for n in _mode_settings(mode)}
    return {"steps": params.steps or STEPS[mode], **chosen}


def sampler_record(chosen: dict[str, Any]) -> dict[str, Any]:
    """What a run's draws depend on (the mode, its steps, the number of draws and the mode's settings),
    from its ``chosen``: the consistency report's thresholds hold only for the record they were calibrated with."""
    return {n: chosen[n] for n in ["mode", "steps", "samples", *_mode_settings(chosen["mode"])]}


def _check_device(device: str) -> None:
    target = torch.device(device)
    if target.type == "cuda" and (target.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _draw(den: Any, A: SenseOperator, y: torch.Tensor, shape: tuple[int, int], mode: str,  # noqa: N803
          settings: dict[str, Any], samples: int, seed: int, parallel: int, device: str,
          progress: Progress | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean and std (None for one draw) of ``samples`` draws for one slice."""
    if mode == "adps":
        kw = {"steps": settings["steps"], "step_size": settings["step_size"], "churn": settings["churn"]}
        sample, posterior = adps_sample, adps_posterior
    else:
        kw = {"steps": settings["steps"], "eta": settings["eta"], "cg_iters": settings["cg_iterations"],
              "max_batch": parallel}
        if settings.get("tv_z") is None:
            kw["gamma"] = settings["gamma"]
        sample, posterior = adps_fast_sample, adps_fast_posterior
    if samples == 1:
        generator = torch.Generator(device).manual_seed(seed)
        x = sample(den, A, y, (1, *shape), generator=generator, progress=progress, device=device, **kw)
        return x[0].detach(), None
    return posterior(den, A, y, shape, samples=samples, seed=seed, parallel=parallel, unbiased=True,
                     progress=progress, device=device, **kw)


def run(acq: MRIAcquisition, params: ADPSParams, progress: Progress | None = None) -> ImageVolume:
    mode = mode_for(params.engine, params.mode)
    if mode == "adps" and params.engine == "onnx":  # the parameter check refuses it; a direct call too
        raise ValueError(WHY_TORCH)
    _check_device(params.device)
    model_id = params.model_id or MODEL.default_model
    device = params.device if params.engine == "torch" else "cpu"
    model, card, engine = load_prior(model_id, params.engine, tuple(params.providers or DEFAULT_PROVIDERS), device)
    prior = prior_info(card)
    h, w = acq.kspace.shape[-2:]
    multiple = size_multiple(card)
    if h % multiple or w % multiple:
        raise InputError(acq.source, f"the k-space grid {h} x {w} is not a multiple of {multiple}, which the prior "
                                     f"{model_id!r} needs")
    mask, num_low = acquisition_mask(acq)
    if num_low < 2:
        raise InputError(acq.source, f"{num_low} fully sampled centre columns: the prior's coil maps and scale need "
                                     "at least 2 calibration lines")
    settings = _settings(params, mode, card)
    sub = further_mask(w, prior, params.seed) if prior["kind"] == "ambient" else None
    parallel = min(params.samples, params.max_batch)
    per_slice = settings["steps"] * (math.ceil(params.samples / parallel) if params.samples > 1 else 1)
    total = per_slice if settings.get("tv_z") is not None else acq.num_slices * per_slice
    # steps: the sampler's, then each slice of the consistency report's baseline
    sampling, baseline = in_stages(progress, [total, acq.num_slices])
    seeds = torch.randint(0, 2**62, (acq.num_slices,), generator=torch.Generator().manual_seed(params.seed))
    mask_t = torch.from_numpy(np.asarray(mask, np.float32)).to(device)
    means, stds = [], []
    if settings.get("tv_z") is not None:
        mean, std = _volume(acq, model, prior, sub, mask, num_low, mask_t, settings, params, parallel, device,
                            None if sampling is None else (lambda done, _n: sampling(done, total)))
        means, stds = [mean], [std] if std is not None else []
    for s in range(acq.num_slices if settings.get("tv_z") is None else 0):
        prep = prepare_slice(acq.kspace[s], mask, num_low, device)
        den = prior_denoiser(model, prior, prep.maps, sub)
        report = None if sampling is None else (lambda done, _n, base=s * per_slice: sampling(base + done, total))
        mean, std = _draw(den, SenseOperator(prep.maps, mask_t), prep.y, (h, w), mode, settings, params.samples,
                          int(seeds[s]), parallel, device, report)
        means.append(center_crop(mean / prep.scale, acq.image_shape).cpu().numpy())
        if std is not None:
            stds.append(center_crop(std / prep.scale, acq.image_shape).cpu().numpy())
    chosen = {"mode": mode, **settings, "samples": params.samples, "prior": prior["kind"],
              "rule": _rule(mode, params, settings, prior)}
    if sub is not None:
        chosen["further_acceleration"] = float(prior["further_acceleration"])
    attrs: dict[str, Any] = {"params": {**params.model_dump(), "mode": mode, **settings}, "chosen": chosen,
                             "model_id": model_id, "weights_sha256": card["sha256"], "engine": engine}
    volume = ImageVolume((np.stack(means) if settings.get("tv_z") is None else means[0]).astype(np.complex64),
                         acq.affine, attrs)
    if stds:
        volume.uncertainty = (np.stack(stds) if settings.get("tv_z") is None else stds[0]).astype(np.float32)
        label = "A-DPS" if mode == "adps" else "fast A-DPS"
        volume.attrs["uncertainty_what"] = (f"standard deviation over {params.samples} {label} draws of the complex "
                                            "image, in the image's units")
    from pipelines.confidence import consistency_report, measured_residuals

    volume.attrs["consistency_report"] = consistency_report(acq, volume.data, measured_residuals(acq, volume.data),
                                                            card, volume.uncertainty, baseline,
                                                            sampler=sampler_record(chosen))
    return volume


def _volume(acq: MRIAcquisition, model: Any, prior: dict[str, Any], sub: torch.Tensor | None, mask: np.ndarray,
            num_low: int, mask_t: torch.Tensor, settings: dict[str, Any], params: ADPSParams, parallel: int,
            device: str, progress: Progress | None) -> tuple[np.ndarray, np.ndarray | None]:
    """All slices as one volume (fast mode, ``tv_z`` set): the prior denoises every slice at each step and the data
    step is one ADMM-TV(z) iteration of ``cg_iterations`` CG steps (``models.diffusion.consistency``). The slices
    share one scale (the median of their calibration scales) so that differences along z mean something."""
    from models.diffusion.consistency import ADMMTVConsistency

    preps = [prepare_slice(acq.kspace[s], mask, num_low, device) for s in range(acq.num_slices)]
    scale = float(np.median([p.scale for p in preps]))
    maps = torch.stack([p.maps for p in preps])
    y = torch.stack([p.y / p.scale * scale for p in preps])
    A = SenseOperator(maps, mask_t)  # noqa: N806 - math name
    den = prior_denoiser(model, prior, maps, sub)
    shape = (acq.num_slices, *acq.kspace.shape[-2:])

    def consistency(batch_dims: int) -> ADMMTVConsistency:
        return ADMMTVConsistency(A, y, lam=float(settings["tv_z"]), rho=VOLUME_RHO, cg_iters=settings["cg_iterations"],
                                 tv_axis=-3, batch_dims=batch_dims)

    kw = {"steps": settings["steps"], "eta": settings["eta"], "max_batch": parallel * acq.num_slices}
    if params.samples == 1:
        x = adps_fast_sample(den, A, y, (1, *shape), consistency=consistency(1), batch_dims=1, progress=progress,
                             generator=torch.Generator(device).manual_seed(params.seed), device=device, **kw)[0]
        std = None
    else:
        x, std = adps_fast_posterior(den, A, y, shape, samples=params.samples, seed=params.seed, parallel=parallel,
                                     make_consistency=consistency, unbiased=True, progress=progress, device=device,
                                     **kw)
    crop = acq.image_shape
    mean_np = center_crop(x.detach() / scale, crop).cpu().numpy()
    return mean_np, None if std is None else center_crop(std / scale, crop).cpu().numpy()


def _rule(mode: str, params: ADPSParams, settings: dict[str, Any], prior: dict[str, Any]) -> str:
    """One line for the CLI's ``chosen:`` and the provenance: what ran and why."""
    why = "asked for" if params.mode else f"mode null on engine {params.engine}"
    what = (f"exact A-DPS ({why}), {settings['steps']} steps, step_size={settings['step_size']:g}" if mode == "adps"
            else f"fast A-DPS ({why}), {settings['steps']} steps, gamma={settings['gamma']:g}, "
                 f"eta={settings['eta']:g}, {settings['cg_iterations']} CG")
    return f"{what}; {params.samples} draw(s) per slice; {prior['kind']} prior"


METHOD = register(Method("adps", "mri", "Ambient Diffusion Posterior Sampling (Aali et al. 2024) with an ambient "
                         "diffusion prior trained from undersampled data; the mean of several draws, their standard "
                         "deviation as an uncertainty map", ADPSParams, run, learned=MODEL, progress_unit="step"))
