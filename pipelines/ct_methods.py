"""Classical CT reconstructors in the registry: fbp, sirt, cgls, admm-tv (3D), admm-tv-2d.

Each builds the geometry and projector from the acquisition (``CTAcquisition.geometry`` as written by
``pipelines.io.sinogram``) and returns the ``(z, y, x)`` volume in the sinogram's attenuation units with the
acquisition's affine. Parameters left out take the registry defaults; ADMM-TV weights left out (or ``None``)
take the settings tuned for the acquisition's number of views (``models.classical.ct.tuned_admm_settings``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.classical import ct as classical
from models.physics.ct.geometry import Geometry, geometry_from_dict
from models.physics.ct.projector import CTProjector
from pipelines.data import CTAcquisition, ImageVolume, InputError
from pipelines.reconstructors import Progress, Reconstructor, check_params, register


def acquisition_geometry(acq: CTAcquisition) -> Geometry:
    try:
        return geometry_from_dict(acq.geometry, acq.angles)
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(acq.source, f"invalid CT geometry ({err})") from err


def _inputs(acq: CTAcquisition, params: dict[str, Any]) -> tuple[Geometry, torch.Tensor]:
    geom = acquisition_geometry(acq)
    sino = np.asarray(acq.sinogram, dtype=np.float32)
    if sino.ndim != 3 or sino.shape[1:] != geom.sinogram_shape:
        raise InputError(acq.source, f"sinogram shape {sino.shape} does not match the geometry "
                                     f"(slices, {geom.num_views}, {geom.num_detectors})")
    device = torch.device(str(params.get("device", "cpu")))
    return geom, torch.from_numpy(np.ascontiguousarray(sino)).to(device)


def _volume(acq: CTAcquisition, x: torch.Tensor, method: str, params: dict[str, Any]) -> ImageVolume:
    data = x.detach().cpu().numpy().astype(np.float32)
    attrs = {"method": method, "params": dict(params), "modality": "ct",
             "units": acq.attrs.get("attenuation_units", "1/mm"), "source": acq.source}
    return ImageVolume(data, np.asarray(acq.affine, dtype=np.float64), attrs)


def _unknown(method: str, params: dict[str, Any], allowed: set[str]) -> None:
    check_params(method, params, set(allowed) | {"device"})


FBP_DEFAULTS = {"filter": "ramp", "cutoff": 1.0}
SIRT_DEFAULTS = {"iterations": 100, "nonneg": True}
CGLS_DEFAULTS = {"iterations": 20}
ADMM_DEFAULTS = {"lam": None, "lam_z": None, "rho": None, "iterations": None, "cg_iterations": None, "nonneg": True}


def run_fbp(acq: CTAcquisition, params: dict[str, Any], progress: Progress | None = None) -> ImageVolume:
    _unknown("fbp", params, set(FBP_DEFAULTS))
    p = {**FBP_DEFAULTS, **params}
    geom, sino = _inputs(acq, p)
    with torch.no_grad():
        x = classical.fbp(sino, geom, str(p["filter"]), float(p["cutoff"]))
    if progress:
        progress(1, 1)
    return _volume(acq, x, "fbp", p)


def run_sirt(acq: CTAcquisition, params: dict[str, Any], progress: Progress | None = None) -> ImageVolume:
    _unknown("sirt", params, set(SIRT_DEFAULTS))
    p = {**SIRT_DEFAULTS, **params}
    geom, sino = _inputs(acq, p)
    with torch.no_grad():
        x = classical.sirt(sino, CTProjector(geom), int(p["iterations"]), bool(p["nonneg"]), progress=progress)
    return _volume(acq, x, "sirt", p)


def run_cgls(acq: CTAcquisition, params: dict[str, Any], progress: Progress | None = None) -> ImageVolume:
    _unknown("cgls", params, set(CGLS_DEFAULTS))
    p = {**CGLS_DEFAULTS, **params}
    geom, sino = _inputs(acq, p)
    with torch.no_grad():
        x = classical.cgls(sino, CTProjector(geom), int(p["iterations"]), progress=progress)
    return _volume(acq, x, "cgls", p)


def _admm_params(params: dict[str, Any], views: int) -> dict[str, Any]:
    tuned = classical.tuned_admm_settings(views)
    p = {**ADMM_DEFAULTS, **params}
    for key in ("lam", "lam_z", "rho", "iterations", "cg_iterations"):
        if p[key] is None:
            p[key] = getattr(tuned, key)
    return p


def _run_admm(acq: CTAcquisition, params: dict[str, Any], progress: Progress | None, volume: bool) -> ImageVolume:
    name = "admm-tv" if volume else "admm-tv-2d"
    _unknown(name, params, set(ADMM_DEFAULTS))
    geom, sino = _inputs(acq, params)
    p = _admm_params(params, geom.num_views)
    op = CTProjector(geom)
    with torch.no_grad():
        if volume:
            x = classical.admm_tv_3d(sino, op, lam=float(p["lam"]), lam_z=float(p["lam_z"]), rho=float(p["rho"]),
                                     iterations=int(p["iterations"]), cg_iterations=int(p["cg_iterations"]),
                                     nonneg=bool(p["nonneg"]), progress=progress)
        else:
            x = classical.admm_tv_2d(sino, op, lam=float(p["lam"]), rho=float(p["rho"]),
                                     iterations=int(p["iterations"]), cg_iterations=int(p["cg_iterations"]),
                                     nonneg=bool(p["nonneg"]), progress=progress)
    return _volume(acq, x, name, p)


def run_admm_tv(acq: CTAcquisition, params: dict[str, Any], progress: Progress | None = None) -> ImageVolume:
    return _run_admm(acq, params, progress, True)


def run_admm_tv_2d(acq: CTAcquisition, params: dict[str, Any], progress: Progress | None = None) -> ImageVolume:
    return _run_admm(acq, params, progress, False)


register(Reconstructor("ct", "fbp", run_fbp, "Filtered backprojection (ramp, shepp-logan, cosine, hamming, hann; "
                       "fan-beam weighted)", FBP_DEFAULTS))
register(Reconstructor("ct", "sirt", run_sirt, "SIRT, non-negative", SIRT_DEFAULTS))
register(Reconstructor("ct", "cgls", run_cgls, "CGLS (early-stopped least squares)", CGLS_DEFAULTS))
register(Reconstructor("ct", "admm-tv", run_admm_tv, "ADMM with 3D total variation (in-plane + along z), "
                       "weights tuned per number of views unless given", ADMM_DEFAULTS))
register(Reconstructor("ct", "admm-tv-2d", run_admm_tv_2d, "ADMM with 2D total variation, slice by slice",
                       ADMM_DEFAULTS))
