"""cgls: early-stopped least squares by CGLS."""

from __future__ import annotations

import torch
from pydantic import Field

from models.classical import ct as classical
from models.physics.ct.projector import CTProjector
from pipelines.data import CTAcquisition, ImageVolume
from pipelines.methods._ct import CTParams, ct_inputs, ct_volume
from pipelines.reconstructors import Method, Progress, register


class CGLSParams(CTParams):
    iterations: int = Field(20, ge=1, le=1000, description="CGLS iterations (the iteration count regularises)")


def run(acq: CTAcquisition, params: CGLSParams, progress: Progress | None = None) -> ImageVolume:
    geom, sino = ct_inputs(acq, params)
    with torch.no_grad():
        x = classical.cgls(sino, CTProjector(geom), params.iterations, progress=progress)
    return ct_volume(acq, x, "cgls", params.model_dump())


METHOD = register(Method("cgls", "ct", "CGLS (early-stopped least squares)", CGLSParams, run))
