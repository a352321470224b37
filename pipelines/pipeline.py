"""read -> reconstruct -> write: one input file to NIfTI and PNG outputs (and metrics with a reference)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.data import CTAcquisition, ImageVolume, MRIAcquisition
from pipelines.io.mrd_header import header_mr_parameters
from pipelines.io.outputs import write_volume_outputs
from pipelines.metrics import evaluate_volume
from pipelines.reconstructors import Progress, get

Acquisition = MRIAcquisition | CTAcquisition


def modality_of(acq: Acquisition) -> str:
    if isinstance(acq, MRIAcquisition):
        return "mri"
    if isinstance(acq, CTAcquisition):
        return "ct"
    raise TypeError(f"not an acquisition: {type(acq).__name__}")


def load(path: str | Path) -> Acquisition:
    from pipelines.io.detect import load_acquisition

    return load_acquisition(path)


@dataclass
class ReconstructionResult:
    volume: ImageVolume
    outputs: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] | None = None


def reconstruct(acq: Acquisition, method: str, params: dict[str, Any] | None = None,
                progress: Progress | None = None) -> ReconstructionResult:
    """Run ``method`` on an acquisition; metrics against its reference when it has one.

    ``params`` are checked against the method's declaration first (``ParamError`` naming the bad one)."""
    reconstructor = get(modality_of(acq), method)
    checked = reconstructor.check(params)
    start = time.perf_counter()
    volume = reconstructor.run(acq, checked, progress)
    seconds = time.perf_counter() - start
    volume.attrs.update(method=method, seconds=seconds, seconds_per_slice=seconds / max(volume.data.shape[0], 1))
    if isinstance(acq, MRIAcquisition) and acq.header_xml and "mr_parameters" not in volume.attrs:
        # TR, TE, field strength ... for the DICOM MR Image module (pipelines.io.dicom_series)
        volume.attrs["mr_parameters"] = header_mr_parameters(acq.header_xml, acq.source)
    metrics = None
    if acq.reference is not None:
        metrics = evaluate_volume(acq.reference, volume.magnitude())
    return ReconstructionResult(volume, {}, metrics)


def output_paths(input_path: Path, method: str, out: Path) -> tuple[Path, Path, Path]:
    """NIfTI, PNG and metrics paths: ``out`` is a ``.nii``/``.nii.gz`` file or a directory."""
    name = out.name
    if name.endswith(".nii.gz") or name.endswith(".nii"):
        stem = name.removesuffix(".gz").removesuffix(".nii")
        return out, out.with_name(stem + ".png"), out.with_name(stem + ".metrics.json")
    stem = input_path.name.removesuffix(".h5").removesuffix(".hdf5") + f"_{method}"
    return out / f"{stem}.nii.gz", out / f"{stem}.png", out / f"{stem}.metrics.json"


def reconstruct_file(path: str | Path, method: str, out: str | Path, params: dict[str, Any] | None = None,
                     progress: Progress | None = None) -> ReconstructionResult:
    """Read ``path``, reconstruct with ``method``, write NIfTI + PNG (+ metrics JSON) under ``out``."""
    path, out = Path(path), Path(out)
    acq = load(path)
    result = reconstruct(acq, method, params, progress)
    nifti, png, metrics_path = output_paths(path, method, out)
    result.outputs.update(write_volume_outputs(result.volume, nifti, png, metrics_path, result.metrics,
                                               {"method": method, "source": str(path)}))
    return result
