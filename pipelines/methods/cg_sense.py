"""cg-sense: SENSE with Tikhonov regularisation, solved by conjugate gradient."""

from __future__ import annotations

from pydantic import Field

from models.classical.noise_rules import RULES
from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.methods._mri import MAX_ITERATIONS, SenseParams, lam_field, run_slices
from pipelines.reconstructors import Method, Progress, register


class CGSenseParams(SenseParams):
    lam: float | None = lam_field(10, "Tikhonov weight relative to ||A^H A|| (1 for normalised maps)")
    # 50: the iterations the noise rule's weights were fitted at (benchmarks/mri_tune_defaults.py)
    max_iter: int = Field(50, ge=1, le=MAX_ITERATIONS, description="CG iterations (early stopping regularises)")
    tol: float = Field(1e-5, ge=0, lt=1, description="stop when the relative residual falls below this")


def _slices(kspace, mask, maps, params: CGSenseParams):
    from models.classical.mri import cg_sense

    return cg_sense(kspace, mask, maps, lam=params.lam, max_iter=params.max_iter, tol=params.tol)


def run(acq: MRIAcquisition, params: CGSenseParams, progress: Progress | None = None) -> ImageVolume:
    return run_slices(acq, params, progress, _slices, rule=RULES["cg-sense"])


METHOD = register(Method("cg-sense", "mri", "CG-SENSE with Tikhonov regularisation", CGSenseParams, run))
