"""l1-wavelet: compressed sensing, SENSE with an L1 penalty on (randomly shifted) Daubechies wavelets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.classical.l1_wavelet import DEFAULTS
from models.classical.noise_rules import ITERATION_RULES, RULES
from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.methods._mri import MAX_ITERATIONS, SenseParams, lam_field, run_slices
from pipelines.reconstructors import Method, Progress, register

WAVELET_PATTERN = r"^(haar|db[1-8])(\+(haar|db[1-8])){0,3}$"


class L1WaveletParams(SenseParams):
    lam: float | None = lam_field(10, "L1 weight relative to the image's bright-tissue intensity (the "
                                      "scale_quantile of |A^H y|)")
    max_iter: int | None = Field(None, ge=1, le=MAX_ITERATIONS,
                                 description="proximal-gradient iterations (null: chosen from the measured noise "
                                             "level and the acceleration, reported as 'chosen')")
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


class _Iterations:
    """Chooses ``max_iter`` per chunk of slices from ``r = sigma / s`` and the acceleration
    (``models.classical.noise_rules.ITERATION_RULES``) when the user leaves it out."""

    def __init__(self, acq: MRIAcquisition):
        from pipelines.methods._mri import acquisition_noise
        from pipelines.sampling import acquisition_mask, sampled_acceleration

        mask, _ = acquisition_mask(acq)
        self.noise = acquisition_noise(acq, mask)
        self.sigma = self.noise["sigma"]
        self.acceleration = sampled_acceleration(mask, acq.kspace.shape[-2:])
        self.rule = ITERATION_RULES["l1-wavelet"]
        self.chosen: list[int] = []

    def __call__(self, kspace, mask, maps, quantile: float) -> int:
        from models.classical.noise_rules import noise_to_signal
        from models.physics.mri.sense import SenseOperator

        ratio = noise_to_signal(self.sigma, SenseOperator(maps, mask).adjoint(kspace), quantile)
        self.chosen.append(self.rule.iterations(ratio, self.acceleration))
        return self.chosen[-1]


def run(acq: MRIAcquisition, params: L1WaveletParams, progress: Progress | None = None) -> ImageVolume:
    from models.classical.l1_wavelet import l1_wavelet

    iterations = _Iterations(acq) if params.max_iter is None else None

    def slices(kspace, mask, maps, chunk_params: L1WaveletParams):
        settings = chunk_params.model_dump(exclude={"maps"})
        if iterations is not None:
            settings["max_iter"] = iterations(kspace, mask, maps, chunk_params.scale_quantile)
        return l1_wavelet(kspace, mask, maps, **settings)

    volume = run_slices(acq, params, progress, slices, rule=RULES["l1-wavelet"])
    if iterations is not None:
        chosen = volume.attrs.setdefault("chosen", {})
        chosen["max_iter"] = max(iterations.chosen)
        if len(set(iterations.chosen)) > 1:
            chosen["max_iter_range"] = [min(iterations.chosen), max(iterations.chosen)]
        chosen["iteration_rule"] = iterations.rule.formula()
        chosen.setdefault("noise", {**iterations.noise})
        # the CLI prints 'rule': the count and its rule join the weight's
        count = f"max_iter={chosen['max_iter']} from {chosen['iteration_rule']}"
        chosen["rule"] = f"{chosen['rule']}; {count}" if chosen.get("rule") else count
    return volume


METHOD = register(Method("l1-wavelet", "mri", "compressed sensing: SENSE with an L1 penalty on Daubechies wavelets",
                         L1WaveletParams, run))
