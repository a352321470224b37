"""fbp: filtered backprojection (parallel and fan beam)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from models.classical import ct as classical
from pipelines.data import CTAcquisition, ImageVolume
from pipelines.methods._ct import CTParams, ct_inputs, ct_volume
from pipelines.reconstructors import Method, Progress, register


class FBPParams(CTParams):
    filter: Literal["ramp", "shepp-logan", "cosine", "hamming", "hann"] = Field("ramp", description="ramp window")
    cutoff: float = Field(1.0, gt=0, le=1, description="window cutoff as a fraction of the Nyquist frequency")


def run(acq: CTAcquisition, params: FBPParams, progress: Progress | None = None) -> ImageVolume:
    geom, sino = ct_inputs(acq, params)
    with torch.no_grad():
        x = classical.fbp(sino, geom, params.filter, params.cutoff)
    if progress:
        progress(1, 1)
    return ct_volume(acq, x, "fbp", params.model_dump())


METHOD = register(Method("fbp", "ct", "Filtered backprojection (ramp, shepp-logan, cosine, hamming, hann; "
                         "fan-beam weighted)", FBPParams, run))
