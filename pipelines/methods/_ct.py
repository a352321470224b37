"""What the CT methods share: the ``device`` parameter, geometry and sinogram checks, the output volume.

Each method builds the geometry and projector from the acquisition (``CTAcquisition.geometry`` as written by
``pipelines.io.sinogram``) and returns the ``(z, y, x)`` volume in the sinogram's attenuation units with the
acquisition's affine.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from models.physics.ct.geometry import Geometry, geometry_from_dict
from pipelines.data import CTAcquisition, ImageVolume, InputError
from pipelines.reconstructors import SERVICE, MethodParams


class CTParams(MethodParams):
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:(0|[1-9][0-9]?))?)$", description="torch device",
                        json_schema_extra={**SERVICE, "allowed": "cpu, cuda or cuda:N"})


def acquisition_geometry(acq: CTAcquisition) -> Geometry:
    try:
        return geometry_from_dict(acq.geometry, acq.angles)
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(acq.source, f"invalid CT geometry ({err})") from err


def ct_inputs(acq: CTAcquisition, params: CTParams) -> tuple[Geometry, torch.Tensor]:
    geom = acquisition_geometry(acq)
    sino = np.asarray(acq.sinogram, dtype=np.float32)
    if sino.ndim != 3 or sino.shape[1:] != geom.sinogram_shape:
        raise InputError(acq.source, f"sinogram shape {sino.shape} does not match the geometry "
                                     f"(slices, {geom.num_views}, {geom.num_detectors})")
    device = torch.device(params.device)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {params.device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return geom, torch.from_numpy(np.ascontiguousarray(sino)).to(device)


def ct_volume(acq: CTAcquisition, x: torch.Tensor, method: str, params: dict,
              chosen: dict | None = None) -> ImageVolume:
    """The output volume; ``chosen`` (what the method chose for parameters left null, and why) goes to
    ``attrs["chosen"]`` when given."""
    data = x.detach().cpu().numpy().astype(np.float32)
    attrs = {"method": method, "params": dict(params), "modality": "ct",
             "units": acq.attrs.get("attenuation_units", "1/mm"), "source": acq.source}
    if chosen is not None:
        attrs["chosen"] = chosen
    return ImageVolume(data, np.asarray(acq.affine, dtype=np.float64), attrs)
