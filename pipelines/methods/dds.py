"""dds: the 2D-prior 3D Decomposed Diffusion Sampler for sparse-view and limited-angle CT (pipeline ``ct-dds``).

The prior (a zoo model of kind ``ct-prior``) works in ``HU / 1000``. With ``mu = mu_w (1 + x)`` the sinogram
``y = A mu`` becomes ``y / mu_w - A 1 = A x``, which ``models.diffusion.dds.dds_sample`` reconstructs; the volume
is returned in the sinogram's attenuation units (clipped at 0). ``lam`` and ``rho`` are scale-free like the
classical CT methods' (``models.classical.ct``): the sampler gets ``lam * ||A^T A||`` and ``rho * ||A^T A||``.
The paper's weights (lam 0.04 sparse view, 0.4 limited angle, rho 10) belong to its operator's scale; here lam
keeps the paper's soft threshold ``lam / rho`` (0.004 sparse view, 0.04 for a limited arc under 170 degrees).

Settings left null are chosen by the acquisition (``REGIMES``; what was chosen is in the volume's
``attrs["chosen"]``), from the grid of ``benchmarks/dds_gpu_tuned.py`` on the prior's tuning slab (rho 0.003,
0.01, 0.03 x CG 1, 2, 5 x eta 0.5, 0.85, 1.0 at 8, 4 and 2 views and a 120-degree arc):

* 4 or more views, or a limited arc: rho 0.01, 5 CG iterations, eta 0.85 (the paper's CG and eta; within 0.4 dB
  of each case's best);
* fewer than 4 views: rho 0.03, 2 CG iterations, eta 1.0. At 2 views 5 CG iterations per step fit the data's
  null space to noise and the sampler diverged (16.3 dB on the tuning slab, against 24.8 dB so).

``start``: 1 starts from pure noise, as the paper does. Below 1 the sampler starts from the consistency report's
baseline (3D ADMM-TV at its defaults, computed first and used by the report too) noised to that fraction of the
schedule, and spends its steps there (``models.diffusion.sampling``'s warm start). The default, ``WARM_START``,
was chosen on the tuning slab by ``benchmarks/dds_warm_start.py`` over 1, 0.4, 0.3, 0.2 and 0.1 at the four
cases: the smallest largest shortfall from each case's best (0.1 dB; the paper's cold start falls 2.9 dB short at
4 views).

``output``: the network's last estimate scored 0.01-0.03 SSIM above the paper's data-consistent output at equal
PSNR (``benchmarks/ct_dds.py``'s earlier grid at 8 views and on a 120-degree arc). Steps are the paper's.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from models.classical.ct import operator_norm2
from models.diffusion.dds import dds_posterior, dds_sample
from models.diffusion.network import DEFAULT_PRIOR_CONFIG, size_multiple
from models.diffusion.schedule import VPSchedule
from models.physics.ct.projector import CTProjector
from pipelines.confidence_ct import baseline_volume, ct_consistency_report
from pipelines.ct_units import MU_WATER
from pipelines.data import CTAcquisition, ImageVolume, InputError
from pipelines.methods._ct import CTParams, ct_inputs, ct_volume
from pipelines.methods._learned import DEFAULT_PROVIDERS, ZooModelParams
from pipelines.reconstructors import LearnedModel, Method, Progress, in_stages, register

LIMITED_ARC_DEG = 170.0
FEW_VIEWS = 4
LAM_OVER_RHO = {"sparse": 0.004, "limited": 0.04}
SAMPLER_KEYS = ("mode", "steps", "start", "samples", "output", "cg_iterations", "lam", "rho", "eta")
WARM_START = 0.3
REGIMES = {"standard": {"rho": 0.01, "cg_iterations": 5, "eta": 0.85},
           "few views": {"rho": 0.03, "cg_iterations": 2, "eta": 1.0}}


class DDSParams(ZooModelParams, CTParams):
    mode: Literal["dds", "mbir"] = Field("dds", description="dds: one ADMM-TV(z) iteration of cg_iterations CG "
                                         "steps per step (Chung et al. 2024); mbir: DiffusionMBIR-style comparison "
                                         "mode, ancestral steps (use many steps and cg_iterations 1)")
    steps: int = Field(50, ge=1, le=1000, description="diffusion steps (network calls per slice)")
    start: float | None = Field(
        None, gt=0, le=1, validate_default=True,
        description="where on the diffusion schedule the sampler starts: 1 from pure noise (the paper); below 1 from "
        f"the ADMM-TV volume noised to that fraction, a warm start (null: {WARM_START:g} for dds, chosen on the "
        "tuning slab; 1 for mbir)")
    cg_iterations: int | None = Field(None, ge=1, le=50, description="CG steps per data-consistency update (null: "
                                      f"5, or 2 under {FEW_VIEWS} views)")
    lam: float | None = Field(None, ge=0, le=100, description="TV weight along z, scale-free (null: rho x 0.004 "
                              "sparse view, rho x 0.04 limited angle)")
    rho: float | None = Field(None, gt=0, le=1000, description=f"ADMM penalty, scale-free (null: 0.01, or 0.03 under "
                              f"{FEW_VIEWS} views)")
    eta: float | None = Field(None, ge=0, le=1, description=f"DDIM stochasticity (null: 0.85, or 1.0 under "
                              f"{FEW_VIEWS} views, for dds; ancestral steps for mbir)")
    corrector_snr: float | None = Field(
        None, gt=0, le=1, description="mbir only: a Langevin corrector after each step at this signal-to-noise ratio, "
        "as DiffusionMBIR's predictor-corrector sampler (0.16 there; 2 network calls per step); null: none")
    output: Literal["denoised", "consistent"] = Field(
        "denoised", description="denoised: the last step's network estimate, before the final data fit (chosen on "
        "the tuning slab); consistent: the last step's data-consistent image (the paper's output)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the sampler's noise")
    samples: int = Field(1, ge=1, le=32, description="draws to run; more than 1: the volume is their mean and "
                         "their standard deviation is written as the uncertainty map (costs samples x the time)")
    max_batch: int = Field(16, ge=1, le=1024, description="slices per network call (memory budget)")
    kind: ClassVar[str] = "ct-prior"

    @field_validator("start")
    @classmethod
    def _room_for_the_steps(cls, start: float | None, info: ValidationInfo) -> float | None:
        steps = info.data.get("steps")
        first = VPSchedule().first_timestep(start_of(info.data.get("mode"), start))
        if isinstance(steps, int) and steps > first + 1:
            why = f"start {start:g}" if start is not None else f"start null ({WARM_START:g} for mode dds)"
            raise ValueError(f"{why} leaves {first + 1} timesteps of the schedule, fewer than steps {steps}")
        return start

    @field_validator("corrector_snr")
    @classmethod
    def _corrector_for_mbir(cls, snr: float | None, info: ValidationInfo) -> float | None:
        if snr is not None and info.data.get("mode") != "mbir":
            raise ValueError("a corrector is part of the mbir comparison mode only; set mode mbir or leave it null")
        return snr


def start_of(mode: str | None, start: float | None) -> float:
    """The start a run uses: as given, else ``WARM_START`` for dds and 1 (pure noise) for the mbir comparison."""
    return start if start is not None else (1.0 if mode == "mbir" else WARM_START)


MODEL = LearnedModel("ct-prior", "ct-prior-brain-sim", dict(DEFAULT_PRIOR_CONFIG))
_DENOISERS: dict[tuple, Any] = {}


def _denoiser(model_id: str, params: DDSParams) -> tuple[Any, dict[str, Any], str]:
    """The prior as a denoiser (torch module or ONNX Runtime session; cached per process) with its card."""
    from models.diffusion.denoiser import OnnxDenoiser, TorchDenoiser
    from pipelines.ship_prior import verified_prior_onnx
    from pipelines.zoo import load_card, load_model

    card = load_card(model_id)
    providers = tuple(params.providers or DEFAULT_PROVIDERS)
    key = (model_id, params.engine, providers if params.engine == "onnx" else params.device)
    if key not in _DENOISERS:
        if params.engine == "onnx":
            _DENOISERS[key] = OnnxDenoiser(verified_prior_onnx(model_id), providers)
        else:
            network, _ = load_model(model_id)
            _DENOISERS[key] = TorchDenoiser(network, params.device)
    den = _DENOISERS[key]
    engine = f"onnxruntime:{den.provider}" if params.engine == "onnx" else f"torch-{params.device}"
    return den, card, engine


def limited_angle(geom: Any) -> bool:
    """A parallel-beam arc under ``LIMITED_ARC_DEG`` (fan beam: under 180 degrees plus the fan)."""
    angles = np.asarray(geom.angles_array(), dtype=np.float64)
    if angles.size < 2:
        return False
    step = float(np.median(np.abs(np.diff(angles))))
    arc = np.degrees(float(np.ptp(angles)) + step)
    return bool(arc < LIMITED_ARC_DEG)


def run(acq: CTAcquisition, params: DDSParams, progress: Progress | None = None) -> ImageVolume:
    geom, sino = ct_inputs(acq, params)
    model_id = params.model_id or MODEL.default_model
    denoiser, card, engine = _denoiser(model_id, params)
    ny, nx = geom.image_shape
    multiple = size_multiple(card["config"])
    if ny % multiple or nx % multiple:
        raise InputError(acq.source, f"the image grid {ny} x {nx} is not a multiple of {multiple}, which the prior "
                                     f"{model_id!r} needs")
    op = CTProjector(geom)
    mu_w = float(acq.attrs.get("mu_water_per_mm") or MU_WATER)
    norm2 = operator_norm2(op)
    limited = limited_angle(geom)
    views = len(np.asarray(geom.angles_array()))
    regime = "few views" if views < FEW_VIEWS and not limited else "standard"
    chosen_rho = params.rho if params.rho is not None else REGIMES[regime]["rho"]
    cg_iterations = params.cg_iterations or REGIMES[regime]["cg_iterations"]
    eta = params.eta if params.eta is not None or params.mode == "mbir" else REGIMES[regime]["eta"]
    lam = params.lam if params.lam is not None else LAM_OVER_RHO["limited" if limited else "sparse"] * chosen_rho
    schedule = VPSchedule(**card.get("schedule", {}))
    start = start_of(params.mode, params.start)
    schedule.timesteps(params.steps, start)  # a step count the start leaves no room for fails here
    # the report's baseline is one unit: it costs about one or two sampler steps; a warm start needs it first
    warm = start < 1.0
    stages = in_stages(progress, [1, params.steps * params.samples] if warm else [params.steps * params.samples, 1])
    checking, sampling = stages if warm else stages[::-1]
    baseline = baseline_volume(acq, _when_done(checking)) if warm else None
    settings = dict(steps=params.steps, cg_iters=cg_iterations, lam=lam * norm2, rho=chosen_rho * norm2,
                    eta=eta, mode=params.mode, max_batch=params.max_batch, progress=sampling,
                    last_consistency=params.output == "consistent", start=start,
                    corrector_snr=params.corrector_snr)
    std = None
    with torch.no_grad():
        ones = torch.ones((sino.shape[0], ny, nx), dtype=sino.dtype, device=sino.device)
        y = sino / mu_w - op.forward(ones)
        shape = (sino.shape[0], ny, nx)
        if baseline is not None:
            settings["warm_start"] = torch.as_tensor(baseline / mu_w - 1.0, dtype=sino.dtype, device=sino.device)
        if params.samples == 1:
            x = dds_sample(denoiser, schedule, op, y, shape, tv_axis=0,
                           generator=torch.Generator(sino.device).manual_seed(params.seed), **settings)
        else:
            x, std = dds_posterior(denoiser, schedule, op, y, shape, samples=params.samples, seed=params.seed,
                                   tv_axis=0, **settings)
        mu = torch.clamp(mu_w * (1.0 + x), min=0.0)
    chosen = {"lam": lam, "rho": chosen_rho, "cg_iterations": cg_iterations, "eta": eta, "start": start,
              "regime": regime, "views": views, "limited_angle": limited, "operator_norm2": norm2,
              "mu_water_per_mm": mu_w,
              "rule": f"rho, CG and eta by REGIMES (few views: under {FEW_VIEWS} views, not a limited arc); lam = rho "
                      f"x {LAM_OVER_RHO['limited']:g} for an arc under {LIMITED_ARC_DEG:g} deg, else rho x "
                      f"{LAM_OVER_RHO['sparse']:g}; start {WARM_START:g} for dds (warm, from the report's "
                      "ADMM-TV), 1 for mbir"}
    volume = ct_volume(acq, mu, "dds", {**params.model_dump(), "lam": lam, "rho": chosen_rho,
                                        "cg_iterations": cg_iterations, "eta": eta, "start": start}, chosen)
    volume.attrs.update({"model_id": model_id, "weights_sha256": card["sha256"], "engine": engine})
    if std is not None:
        volume.uncertainty = (mu_w * std).cpu().numpy().astype(np.float32)
    volume.attrs["consistency_report"] = ct_consistency_report(acq, volume.data, geom, card, volume.uncertainty,
                                                               _when_done(checking), sampler_record(params),
                                                               baseline=baseline)
    return volume


def _when_done(stage: Progress | None) -> Progress | None:
    """The baseline's progress as one unit of ``stage``: done when its iterations are."""
    return None if stage is None else lambda done, total: stage(1, 1) if done == total else None


def sampler_record(params: DDSParams) -> dict[str, Any]:
    """The settings a DDS volume's consistency report holds for (``pipelines.confidence.judged``): those that
    shape the image, as given (null: chosen by the acquisition, ``REGIMES``), and the mbir mode's corrector where
    one runs."""
    record = {key: getattr(params, key) for key in SAMPLER_KEYS}
    if params.corrector_snr is not None:
        record["corrector_snr"] = params.corrector_snr
    return record


METHOD = register(Method("dds", "ct", "Decomposed Diffusion Sampler: a 2D diffusion prior on axial slices joined "
                         "along z by total variation, 50 network calls per slice (Chung et al. 2024)",
                         DDSParams, run, learned=MODEL))
