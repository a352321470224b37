"""Result files of a job under ``DATA_DIR/results/<job_id>/``: recon.nii.gz, preview.png, metrics.json,
the DICOM series in dicom/ and the same series zipped in series.zip.

Files are written into a staging folder next to the final one, fsynced, and the folder is renamed into
place, so a reader never sees half a result and a job re-run after a crash replaces what an interrupted
run left behind.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.data import ImageVolume
from pipelines.io.dicom_series import Provenance, write_dicom_series, zip_series
from pipelines.io.dicom_study import StudyInfo
from pipelines.io.durable import fsync_path
from pipelines.io.outputs import write_volume_outputs

RESULTS_DIR = "results"
FILES = {"nifti": "recon.nii.gz", "png": "preview.png", "metrics": "metrics.json", "dicom": "series.zip",
         "uncertainty": "recon_uncertainty.nii.gz"}  # the name outputs.uncertainty_path gives recon.nii.gz
DICOM_DIR = "dicom"
DICOM_MODALITY = {"mri": "MR", "ct": "CT"}


@dataclass(frozen=True)
class DicomSeries:
    """What the DICOM series of a result needs besides the volume: modality ("mri"/"ct"), study, provenance."""

    modality: str
    study: StudyInfo
    provenance: Provenance
    series_description: str | None = None
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def results_dir(data_dir: Path, job_id: str) -> Path:
    if not _JOB_ID.fullmatch(job_id or ""):
        raise ValueError(f"invalid job id {job_id!r}")
    return Path(data_dir) / RESULTS_DIR / job_id


def write_results(data_dir: Path, job_id: str, volume: ImageVolume, metrics: dict[str, float] | None = None,
                  info: dict[str, Any] | None = None, dicom: DicomSeries | None = None) -> dict[str, str]:
    """Write the NIfTI volume, the PNG preview, (with ``metrics``) metrics.json and (with ``dicom``) the DICOM
    series and its zip for ``job_id``.

    ``info`` (pipeline, method, ...) goes into metrics.json next to the numbers. Returns
    ``{format: path relative to data_dir}`` with formats ``nifti``, ``png``, ``metrics`` and ``dicom``.
    """
    data_dir = Path(data_dir)
    final = results_dir(data_dir, job_id)
    staging = final.with_name(f".{job_id}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    outputs = write_volume_outputs(volume, staging / FILES["nifti"], staging / FILES["png"],
                                   staging / FILES["metrics"], metrics, info)
    written, formats = list(outputs.values()), list(outputs)
    if dicom is not None:
        series = write_dicom_series(volume, staging / DICOM_DIR, DICOM_MODALITY[dicom.modality], dicom.study,
                                    dicom.provenance, series_description=dicom.series_description)
        written += [*series, zip_series(series, staging / FILES["dicom"])]
        formats.append("dicom")
    for path in written:
        fsync_path(path)
    if dicom is not None:
        fsync_path(staging / DICOM_DIR)
    fsync_path(staging)
    if final.exists():  # left by an earlier, interrupted run of the same job
        shutil.rmtree(final)
    os.replace(staging, final)
    fsync_path(final.parent)
    return {fmt: (final / FILES[fmt]).relative_to(data_dir).as_posix() for fmt in formats}
