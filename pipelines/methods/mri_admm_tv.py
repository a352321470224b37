"""MRI admm-tv (3D: in-plane TV plus TV along the slice axis, the whole slab one problem) and admm-tv-2d
(slice by slice): SENSE with total variation, solved by ADMM on the SENSE operator (``models.classical.mri``)."""

from __future__ import annotations

from pydantic import Field

from models.classical.mri import ADMM_TV_DEFAULTS as DEFAULTS
from models.classical.noise_rules import RULES
from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.methods._mri import SenseParams, lam_field, run_slices
from pipelines.reconstructors import Method, Progress, register


class MRIADMMTV2DParams(SenseParams):
    lam: float | None = lam_field(1, "in-plane TV weight relative to the image's bright-tissue intensity "
                                     "(scale_quantile of |A^H y|)")
    rho: float = Field(DEFAULTS["rho"], ge=1e-4, le=100, description="ADMM penalty relative to ||A^H A||")
    iterations: int = Field(DEFAULTS["iterations"], ge=1, le=2000, description="ADMM iterations")
    cg_iterations: int = Field(DEFAULTS["cg_iterations"], ge=1, le=100, description="CG steps per x-update")
    scale_quantile: float = Field(DEFAULTS["scale_quantile"], ge=1e-3, le=1,
                                  description="quantile of |A^H y| that lam is relative to")


class MRIADMMTV3DParams(MRIADMMTV2DParams):
    lam_z: float | None = Field(DEFAULTS["lam_z"], ge=0, le=1,
                                description="TV weight along the slice axis (null: the same as lam)")


def _solve(kspace, mask, maps, params: MRIADMMTV2DParams, volume: bool, progress: Progress | None = None):
    from models.classical.mri import admm_tv_sense

    settings = params.model_dump(exclude={"maps"})
    return admm_tv_sense(kspace, mask, maps, volume=volume, progress=progress, **settings)


def run_2d(acq: MRIAcquisition, params: MRIADMMTV2DParams, progress: Progress | None = None) -> ImageVolume:
    return run_slices(acq, params, progress, lambda k, m, s, p: _solve(k, m, s, p, volume=False),
                      rule=RULES["admm-tv"])


def run_3d(acq: MRIAcquisition, params: MRIADMMTV3DParams, progress: Progress | None = None) -> ImageVolume:
    # the slab is one problem (TV couples the slices): progress counts ADMM iterations
    return run_slices(acq, params, None, lambda k, m, s, p: _solve(k, m, s, p, volume=True, progress=progress),
                      chunk=max(acq.num_slices, 1), rule=RULES["admm-tv"])


ADMM_TV = register(Method("admm-tv", "mri", "SENSE with 3D total variation (in-plane + along the slices) by ADMM",
                          MRIADMMTV3DParams, run_3d, progress_unit="iteration"))
ADMM_TV_2D = register(Method("admm-tv-2d", "mri", "SENSE with 2D total variation by ADMM, slice by slice",
                             MRIADMMTV2DParams, run_2d))
