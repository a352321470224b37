"""CT admm-tv (3D: in-plane TV plus TV along z) and admm-tv-2d (slice by slice).

Weights left out (or null) take the settings tuned for the acquisition's number of views
(``models.classical.ct.tuned_admm_settings``).
"""

from __future__ import annotations

import torch
from pydantic import Field

from models.classical import ct as classical
from models.physics.ct.projector import CTProjector
from pipelines.data import CTAcquisition, ImageVolume
from pipelines.methods._ct import CTParams, ct_inputs, ct_volume
from pipelines.reconstructors import Method, Progress, register

TUNED = "null: tuned for the number of views"


class ADMMTV2DParams(CTParams):
    lam: float | None = Field(None, ge=0, le=10, description=f"in-plane TV weight, scale-free ({TUNED})")
    rho: float | None = Field(None, gt=0, le=100, description=f"ADMM penalty, relative to ||A^T A|| ({TUNED})")
    iterations: int | None = Field(None, ge=1, le=2000, description=f"ADMM iterations ({TUNED})")
    cg_iterations: int | None = Field(None, ge=1, le=100, description=f"CG steps per x-update ({TUNED})")
    nonneg: bool = Field(True, description="constrain the image to non-negative values")


class ADMMTV3DParams(ADMMTV2DParams):
    lam_z: float | None = Field(None, ge=0, le=10, description=f"TV weight along z, scale-free ({TUNED})")


def _settings(params: ADMMTV2DParams, views: int) -> dict:
    tuned = classical.tuned_admm_settings(views)
    chosen = params.model_dump()
    for key in ("lam", "lam_z", "rho", "iterations", "cg_iterations"):
        if key in chosen and chosen[key] is None:
            chosen[key] = getattr(tuned, key)
    return chosen


def run_3d(acq: CTAcquisition, params: ADMMTV3DParams, progress: Progress | None = None) -> ImageVolume:
    geom, sino = ct_inputs(acq, params)
    p = _settings(params, geom.num_views)
    with torch.no_grad():
        x = classical.admm_tv_3d(sino, CTProjector(geom), lam=p["lam"], lam_z=p["lam_z"], rho=p["rho"],
                                 iterations=p["iterations"], cg_iterations=p["cg_iterations"], nonneg=p["nonneg"],
                                 progress=progress)
    return ct_volume(acq, x, "admm-tv", p)


def run_2d(acq: CTAcquisition, params: ADMMTV2DParams, progress: Progress | None = None) -> ImageVolume:
    geom, sino = ct_inputs(acq, params)
    p = _settings(params, geom.num_views)
    with torch.no_grad():
        x = classical.admm_tv_2d(sino, CTProjector(geom), lam=p["lam"], rho=p["rho"], iterations=p["iterations"],
                                 cg_iterations=p["cg_iterations"], nonneg=p["nonneg"], progress=progress)
    return ct_volume(acq, x, "admm-tv-2d", p)


ADMM_TV = register(Method("admm-tv", "ct", "ADMM with 3D total variation (in-plane + along z), weights tuned per "
                          "number of views unless given", ADMMTV3DParams, run_3d))
ADMM_TV_2D = register(Method("admm-tv-2d", "ct", "ADMM with 2D total variation, slice by slice", ADMMTV2DParams,
                             run_2d))
