"""CT admm-tv (3D: in-plane TV plus TV along z) and admm-tv-2d (slice by slice).

Weights left out (or null) adapt to the acquisition: the sinogram's noise is estimated
(``models.physics.ct.noise``: from the stated incident photon count ``noise_i0``, else from the data) and
``lam = lam_z = ADMM_LAM_RULE(views, sigma / rms(sinogram))`` (``models.classical.ct``, fitted by
``benchmarks/ct_tune_admm.py``). What was chosen is recorded in the volume's ``attrs["chosen"]``: the weights, the
noise estimate and the rule. rho and iteration counts left null take ``tuned_admm_settings``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from models.classical import ct as classical
from models.physics.ct.noise import estimate_noise, sinogram_scale, stated_i0
from models.physics.ct.projector import CTProjector
from pipelines.data import CTAcquisition, ImageVolume
from pipelines.methods._ct import CTParams, ct_inputs, ct_volume
from pipelines.reconstructors import Method, Progress, register

ADAPTIVE = "null: from the noise level and the number of views"
TUNED = "null: tuned for the number of views"


class ADMMTV2DParams(CTParams):
    lam: float | None = Field(None, ge=0, le=10, description=f"in-plane TV weight, scale-free ({ADAPTIVE})")
    rho: float | None = Field(None, gt=0, le=100, description=f"ADMM penalty, relative to ||A^T A|| ({TUNED})")
    iterations: int | None = Field(None, ge=1, le=2000, description=f"ADMM iterations ({TUNED})")
    cg_iterations: int | None = Field(None, ge=1, le=100, description=f"CG steps per x-update ({TUNED})")
    nonneg: bool = Field(True, description="constrain the image to non-negative values")


class ADMMTV3DParams(ADMMTV2DParams):
    lam_z: float | None = Field(None, ge=0, le=10, description=f"TV weight along z, scale-free ({ADAPTIVE})")


def _chosen_weights(acq: CTAcquisition, views: int, keys: list[str]) -> dict[str, Any]:
    """``lam = ADMM_LAM_RULE(views, sigma_rel)`` for each of ``keys``, with the noise estimate and the rule."""
    noise = estimate_noise(acq.sinogram, stated_i0(acq.attrs))
    sigma_rel = noise.sigma / sinogram_scale(acq.sinogram)
    lam = classical.tuned_admm_settings(views, sigma_rel).lam
    return {**{key: lam for key in keys}, "noise": noise.as_dict(),
            "rule": classical.ADMM_LAM_RULE.formula()}


def _settings(params: ADMMTV2DParams, acq: CTAcquisition, views: int) -> tuple[dict, dict | None]:
    """The run's settings (nulls filled in) and ``attrs["chosen"]`` (None when the user gave every weight)."""
    chosen = params.model_dump()
    tuned = classical.tuned_admm_settings(views)
    for key in ("rho", "iterations", "cg_iterations"):
        if chosen[key] is None:
            chosen[key] = getattr(tuned, key)
    weights = [key for key in ("lam", "lam_z") if key in chosen]
    if all(chosen[key] is not None for key in weights):
        return chosen, None
    adaptive = _chosen_weights(acq, views, weights)
    for key in weights:
        if chosen[key] is None:
            chosen[key] = adaptive[key]
        adaptive[key] = chosen[key]
    return chosen, adaptive


def run_3d(acq: CTAcquisition, params: ADMMTV3DParams, progress: Progress | None = None) -> ImageVolume:
    geom, sino = ct_inputs(acq, params)
    p, chosen = _settings(params, acq, geom.num_views)
    with torch.no_grad():
        x = classical.admm_tv_3d(sino, CTProjector(geom), lam=p["lam"], lam_z=p["lam_z"], rho=p["rho"],
                                 iterations=p["iterations"], cg_iterations=p["cg_iterations"], nonneg=p["nonneg"],
                                 progress=progress)
    return ct_volume(acq, x, "admm-tv", p, chosen)


def run_2d(acq: CTAcquisition, params: ADMMTV2DParams, progress: Progress | None = None) -> ImageVolume:
    geom, sino = ct_inputs(acq, params)
    p, chosen = _settings(params, acq, geom.num_views)
    with torch.no_grad():
        x = classical.admm_tv_2d(sino, CTProjector(geom), lam=p["lam"], rho=p["rho"], iterations=p["iterations"],
                                 cg_iterations=p["cg_iterations"], nonneg=p["nonneg"], progress=progress)
    return ct_volume(acq, x, "admm-tv-2d", p, chosen)


ADMM_TV = register(Method("admm-tv", "ct", "ADMM with 3D total variation (in-plane + along z), weights adapted to "
                          "the noise level and number of views unless given", ADMMTV3DParams, run_3d))
ADMM_TV_2D = register(Method("admm-tv-2d", "ct", "ADMM with 2D total variation, slice by slice", ADMMTV2DParams,
                             run_2d))
