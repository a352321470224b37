"""Result series written the way a job writes them, and a job row to hang deliveries on, for the PACS tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.data import ImageVolume
from pipelines.io.dicom_series import Provenance
from pipelines.io.dicom_study import StudyInfo
from recon_service.jobs.results import DicomSeries, write_results
from recon_service.jobs.store import JobState, NewInput

STUDY = {"patient_name": "Doe^Jane", "patient_id": "MRN-0042", "patient_birth_date": "19700101",
         "patient_sex": "F", "accession_number": "ACC-77", "study_id": "S77", "study_date": "20261201",
         "study_time": "101500", "referring_physician_name": "House^Greg", "study_description": "Brain MRI"}


def job_result(data_dir: Path, job_id: str, slices: int = 4, uncertainty: bool = False,
               study: dict | None = None) -> dict[str, str]:
    """Write a small MR result (and its uncertainty series) for ``job_id`` under ``data_dir``."""
    rng = np.random.default_rng(0)
    data = rng.random((slices, 16, 16)).astype(np.float32)
    volume = ImageVolume(data, np.diag([1.0, 1.0, 3.0, 1.0]), {"method": "cg-sense"},
                         uncertainty=rng.random((slices, 16, 16)).astype(np.float32) if uncertainty else None)
    info = StudyInfo.from_mapping(STUDY if study is None else study).with_uid()
    return write_results(data_dir, job_id, volume, dicom=DicomSeries(
        "mri", info, Provenance(method="cg-sense", pipeline="mri-cg-sense"), "mri-cg-sense reconstruction"))


def succeeded_job(store, data_dir: Path, pipeline: str = "mri-cg-sense", slices: int = 4,
                  uncertainty: bool = False, planned: list[tuple[str, str]] | None = None) -> str:  # noqa: ANN001
    """A job in the store that ran and succeeded with a result series on disk, with the outbox rows ``planned``
    added by the store's ``finish`` as the worker adds them; returns its id."""
    from recon_service.pacs.outbox import add_deliveries

    job, _ = store.create(pipeline, [NewInput("in.h5", "uploads/x/in.h5", 1, "0" * 64, "fastmri")], "tester")
    files = job_result(data_dir, job.id, slices, uncertainty)
    store.claim_next("w")
    also = (lambda session: add_deliveries(session, job.id, planned, "auto")) if planned else None
    store.finish(job.id, JobState.SUCCEEDED, result={"files": files}, also=also)
    return job.id


def ct_series(out_dir: Path, slices: int = 6, size: int = 32, study: dict | None = None,
              description: str = "Head CT") -> list[Path]:
    """A small CT image series (a disc of soft tissue with a bright insert, in HU) as a scanner would send it."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    disc = np.where(xx**2 + yy**2 < 0.16, 40.0, -1000.0)
    disc[(xx - 0.1) ** 2 + yy**2 < 0.01] = 700.0
    hu = np.repeat(disc[None], slices, axis=0).astype(np.float32)
    volume = ImageVolume(hu, np.diag([0.8, 0.8, 2.0, 1.0]), {"units": "HU", "method": "scanner"})
    info = StudyInfo.from_mapping(STUDY if study is None else study).with_uid()
    from pipelines.io.dicom_series import write_dicom_series

    return write_dicom_series(volume, out_dir, "CT", info, Provenance(method="scanner", pipeline="scanner"),
                              series_description=description)
