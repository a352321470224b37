"""zero-filled: the inverse FFT of the zero-filled k-space, coils combined by root-sum-of-squares."""

from __future__ import annotations

from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.methods._mri import run_slices
from pipelines.reconstructors import Method, MethodParams, Progress, register


class ZeroFilledParams(MethodParams):
    pass


def _slices(kspace, mask, maps, params):
    from models.classical.mri import zero_filled

    return zero_filled(kspace, mask, maps)


def run(acq: MRIAcquisition, params: ZeroFilledParams, progress: Progress | None = None) -> ImageVolume:
    return run_slices(acq, params, progress, _slices)


METHOD = register(Method("zero-filled", "mri", "inverse FFT of zero-filled k-space, root-sum-of-squares coil "
                         "combination", ZeroFilledParams, run))
