"""sirt: the simultaneous iterative reconstruction technique, non-negative."""

from __future__ import annotations

import torch
from pydantic import Field

from models.classical import ct as classical
from models.physics.ct.projector import CTProjector
from pipelines.data import CTAcquisition, ImageVolume
from pipelines.methods._ct import CTParams, ct_inputs, ct_volume
from pipelines.reconstructors import Method, Progress, register


class SIRTParams(CTParams):
    iterations: int = Field(100, ge=1, le=5000, description="SIRT iterations")
    nonneg: bool = Field(True, description="clip to non-negative values after each iteration")


def run(acq: CTAcquisition, params: SIRTParams, progress: Progress | None = None) -> ImageVolume:
    geom, sino = ct_inputs(acq, params)
    with torch.no_grad():
        x = classical.sirt(sino, CTProjector(geom), params.iterations, params.nonneg, progress=progress)
    return ct_volume(acq, x, "sirt", params.model_dump())


METHOD = register(Method("sirt", "ct", "SIRT, non-negative", SIRTParams, run))
