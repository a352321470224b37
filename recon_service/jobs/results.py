"""Result files of a job under ``DATA_DIR/results/<job_id>/``: recon.nii.gz, preview.png, metrics.json,
the DICOM series in dicom/ and the same series zipped in series.zip; a volume with an uncertainty map (a diffusion
method's std over draws) adds recon_uncertainty.nii.gz and, with DICOM, the map as a second series of the same
study and frame of reference in dicom-uncertainty/, zipped in uncertainty_series.zip
(``pipelines.io.dicom_uncertainty``).

Files are written into a staging folder next to the final one, fsynced, and the folder is renamed into
place, so a reader never sees half a result and a job re-run after a crash replaces what an interrupted
run left behind.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from pipelines.data import ImageVolume
from pipelines.io.dicom_series import Provenance, write_dicom_series, zip_series
from pipelines.io.dicom_study import StudyInfo
from pipelines.io.dicom_uncertainty import uncertainty_description, write_uncertainty_series
from pipelines.io.durable import publish_dir
from pipelines.io.outputs import write_volume_outputs

RESULTS_DIR = "results"
FILES = {"nifti": "recon.nii.gz", "png": "preview.png", "metrics": "metrics.json", "dicom": "series.zip",
         "uncertainty": "recon_uncertainty.nii.gz",  # the name outputs.uncertainty_path gives recon.nii.gz
         "uncertainty-dicom": "uncertainty_series.zip", "panes": "review-panes"}
DICOM_DIR = "dicom"
UNCERTAINTY_DICOM_DIR = "dicom-uncertainty"
DICOM_MODALITY = {"mri": "MR", "ct": "CT"}


@dataclass(frozen=True)
class DicomSeries:
    """What the DICOM series of a result needs besides the volume: modality ("mri"/"ct"), study, provenance."""

    modality: str
    study: StudyInfo
    provenance: Provenance
    series_description: str | None = None
    attributes: dict[str, str] | None = None  # DICOM keywords set on every image (e.g. ImageComments)


def written_study(path: Path, study: StudyInfo) -> StudyInfo:
    """``study`` with the StudyInstanceUID, date and time the series at ``path`` was written with (the writer
    makes them for a new study), so that a second series joins the same study."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return dataclasses.replace(study, study_instance_uid=str(ds.StudyInstanceUID),
                               study_date=str(ds.get("StudyDate") or "") or None,
                               study_time=str(ds.get("StudyTime") or "") or None)


_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def results_dir(data_dir: Path, job_id: str) -> Path:
    if not _JOB_ID.fullmatch(job_id or ""):
        raise ValueError(f"invalid job id {job_id!r}")
    return Path(data_dir) / RESULTS_DIR / job_id


def write_results(data_dir: Path, job_id: str, volume: ImageVolume, metrics: dict[str, float] | None = None,
                  info: dict[str, Any] | None = None, dicom: DicomSeries | None = None,
                  panes: dict[str, np.ndarray] | None = None) -> dict[str, str]:
    """Write the NIfTI volume, the PNG preview, (with ``metrics``) metrics.json and (with ``dicom``) the DICOM
    series and its zip for ``job_id``.

    ``info`` (pipeline, method, ...) goes into metrics.json next to the numbers. Returns
    ``{format: path relative to data_dir}`` with formats ``nifti``, ``png``, ``metrics`` and ``dicom``, and for a
    volume with an uncertainty map ``uncertainty`` (NIfTI) and, with ``dicom``, ``uncertainty-dicom``. ``panes``
    (the review tool's comparison images, ``pipelines.comparison``) go with the reconstruction's own magnitude and
    uncertainty into the folder ``panes``, one float32 ``<pane>.npy`` each (read a slice at a time, memory-mapped).
    """
    data_dir = Path(data_dir)
    final = results_dir(data_dir, job_id)
    staging = final.with_name(f".{job_id}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    outputs = write_volume_outputs(volume, staging / FILES["nifti"], staging / FILES["png"],
                                   staging / FILES["metrics"], metrics, info)
    formats = list(outputs)
    if dicom is not None:
        frame = str(generate_uid())  # one frame of reference for the image and the uncertainty series
        modality = DICOM_MODALITY[dicom.modality]
        series = write_dicom_series(volume, staging / DICOM_DIR, modality, dicom.study, dicom.provenance,
                                    series_description=dicom.series_description, frame_of_reference_uid=frame,
                                    attributes=dicom.attributes)
        zip_series(series, staging / FILES["dicom"])
        formats.append("dicom")
        if volume.uncertainty is not None:
            pipeline = dicom.provenance.pipeline or dicom.provenance.method
            maps = write_uncertainty_series(volume, staging / UNCERTAINTY_DICOM_DIR, modality,
                                            written_study(series[0], dicom.study),
                                            dicom.provenance, uncertainty_description(pipeline),
                                            frame_of_reference_uid=frame, what=volume.attrs.get("uncertainty_what"))
            zip_series(maps, staging / FILES["uncertainty-dicom"])
            formats.append("uncertainty-dicom")
    if panes is not None:
        arrays = {"recon": volume.magnitude(), **panes}
        if volume.uncertainty is not None:
            arrays["uncertainty"] = np.asarray(volume.uncertainty, dtype=np.float32)
        (staging / FILES["panes"]).mkdir()
        for name, array in arrays.items():
            path = staging / FILES["panes"] / f"{name}.npy"
            np.save(path, np.ascontiguousarray(array, dtype=np.float32))
        formats.append("panes")
    publish_dir(staging, final)
    return {fmt: (final / FILES[fmt]).relative_to(data_dir).as_posix() for fmt in formats}


def result_dicom_files(data_dir: Path, job_id: str) -> list[Path]:
    """The DICOM files of a job's results: the image series, then the uncertainty series when there is one."""
    folder = results_dir(data_dir, job_id)
    return [*sorted((folder / DICOM_DIR).glob("*.dcm")), *sorted((folder / UNCERTAINTY_DICOM_DIR).glob("*.dcm"))]
