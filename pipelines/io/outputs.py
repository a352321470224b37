"""The result files of one reconstructed volume: NIfTI volume, PNG preview and (optional) metrics JSON.

Both the command line (``pipelines.pipeline.reconstruct_file``) and the service's job results
(``recon_service.jobs.results.write_results``) write through :func:`write_volume_outputs`, so a volume looks the
same wherever it was reconstructed. The magnitude of the volume is written; the caller chooses the paths.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.data import ImageVolume
from pipelines.io.nifti import write_nifti
from pipelines.io.png import write_png


def write_metrics(path: str | Path, metrics: Mapping[str, float], info: Mapping[str, Any] | None = None) -> Path:
    """``{**info, **metrics}`` as indented JSON (a text file, ending in a newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**(info or {}), **metrics}, indent=2) + "\n")
    return path


def uncertainty_path(nifti: str | Path) -> Path:
    """Where the uncertainty map of the volume written to ``nifti`` goes: ``<stem>_uncertainty.nii.gz``."""
    nifti = Path(nifti)
    stem = nifti.name.removesuffix(".gz").removesuffix(".nii")
    return nifti.with_name(f"{stem}_uncertainty.nii.gz")


def write_volume_outputs(volume: ImageVolume, nifti: str | Path, png: str | Path,
                         metrics_path: str | Path | None = None, metrics: Mapping[str, float] | None = None,
                         info: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the magnitude of ``volume`` as NIfTI (with its affine) to ``nifti`` and as a PNG preview to ``png``;
    with ``metrics`` (and ``metrics_path``) also the metrics JSON, ``info`` (method, source, ...) first; a volume
    with an uncertainty map (the diffusion methods' std over draws) also writes it, next to ``nifti``
    (``uncertainty_path``).

    Returns ``{"nifti": path, "png": path[, "metrics": path][, "uncertainty": path]}`` in the order written."""
    if metrics is not None and metrics_path is None:
        raise ValueError("metrics given without a metrics_path to write them to")
    magnitude = volume.magnitude()
    written = {"nifti": write_nifti(nifti, magnitude, volume.affine), "png": write_png(png, magnitude)}
    if metrics is not None and metrics_path is not None:
        written["metrics"] = write_metrics(metrics_path, metrics, info)
    if volume.uncertainty is not None:
        written["uncertainty"] = write_nifti(uncertainty_path(nifti), volume.uncertainty.astype("float32"),
                                             volume.affine)
    return written
