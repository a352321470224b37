"""l1-wavelet: compressed sensing, SENSE with an L1 penalty on (randomly shifted) Daubechies wavelets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.classical.l1_wavelet import DEFAULTS
from models.classical.noise_rules import RULES
from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.methods._mri import MAX_ITERATIONS, SenseParams, lam_field, run_slices
from pipelines.reconstructors import Method, Progress, register

WAVELET_PATTERN = r"^(haar|db[1-8])(\+(haar|db[1-8])){0,3}$"


class L1WaveletParams(SenseParams):
    lam: float | None = lam_field(10, "L1 weight relative to the image's bright-tissue intensity (the "
                                      "scale_quantile of |A^H y|)")
    max_iter: int = Field(DEFAULTS["max_iter"], ge=1, le=MAX_ITERATIONS, description="proximal-gradient iterations")
    wavelet: str = Field(DEFAULTS["wavelet"], pattern=WAVELET_PATTERN,
                         description="wavelet, or several joined by + used in turn",
                         json_schema_extra={"allowed": "haar, db1 ... db8, or up to 4 of them joined by +"})
    levels: int | None = Field(DEFAULTS["levels"], ge=1, le=8,
                               description="decomposition levels (null: coarsest band at least 16 pixels)")
    random_shift: bool = Field(DEFAULTS["random_shift"], description="cycle spinning: random shift per iteration")
    method: Literal["ista", "fista", "pogm"] = Field(DEFAULTS["method"], description="proximal-gradient algorithm")
    scale_quantile: float = Field(DEFAULTS["scale_quantile"], gt=0, le=1,
                                  description="quantile of |A^H y| that lam is relative to")
    threshold_coarse: bool = Field(DEFAULTS["threshold_coarse"], description="also shrink the coarsest band")
    continuation: float = Field(DEFAULTS["continuation"], ge=1, le=1000,
                                description="start the threshold this many times higher and decay to lam")
    continuation_frac: float = Field(DEFAULTS["continuation_frac"], ge=0, le=1,
                                     description="fraction of the iterations the decay takes")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the random shifts")


def _slices(kspace, mask, maps, params: L1WaveletParams):
    from models.classical.l1_wavelet import l1_wavelet

    settings = params.model_dump(exclude={"maps"})
    return l1_wavelet(kspace, mask, maps, **settings)


def run(acq: MRIAcquisition, params: L1WaveletParams, progress: Progress | None = None) -> ImageVolume:
    return run_slices(acq, params, progress, _slices, rule=RULES["l1-wavelet"])


METHOD = register(Method("l1-wavelet", "mri", "compressed sensing: SENSE with an L1 penalty on Daubechies wavelets",
                         L1WaveletParams, run))
