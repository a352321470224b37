"""The index of result instances that DICOMweb searches (QIDO-RS) and serves (WADO-RS): one ``result_instances``
row per DICOM file of a succeeded job, added in the transaction that records the job's success."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from recon_service.db.schema import ResultInstance
from recon_service.jobs.results import result_dicom_files

STUDY_FILTERS = {"StudyInstanceUID": ResultInstance.study_uid, "PatientID": ResultInstance.patient_id,
                 "AccessionNumber": ResultInstance.accession_number, "StudyDate": ResultInstance.study_date,
                 "PatientName": ResultInstance.patient_name}


def _int(value) -> int | None:  # noqa: ANN001
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(ds: pydicom.Dataset, keyword: str, limit: int) -> str | None:
    value = str(ds.get(keyword, "") or "")
    return value[:limit] or None


def index_rows(data_dir: Path, job_id: str) -> list[ResultInstance]:
    """Rows for the DICOM files of ``job_id``'s results (headers only are read)."""
    rows = []
    for path in result_dicom_files(data_dir, job_id):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows.append(ResultInstance(
            sop_instance_uid=str(ds.SOPInstanceUID), series_uid=str(ds.SeriesInstanceUID),
            study_uid=str(ds.StudyInstanceUID), job_id=job_id, path=path.relative_to(data_dir).as_posix(),
            sop_class_uid=str(ds.SOPClassUID), instance_number=_int(ds.get("InstanceNumber")),
            series_number=_int(ds.get("SeriesNumber")), modality=str(ds.get("Modality", "OT")),
            series_description=_text(ds, "SeriesDescription", 64), patient_id=_text(ds, "PatientID", 64),
            patient_name=_text(ds, "PatientName", 64), study_date=_text(ds, "StudyDate", 8),
            accession_number=_text(ds, "AccessionNumber", 16), study_description=_text(ds, "StudyDescription", 64)))
    return rows


def add_index(session: Session, rows: Iterable[ResultInstance]) -> None:
    for row in rows:
        session.merge(row)


@dataclass(frozen=True)
class StudySummary:
    study_uid: str
    patient_id: str | None
    patient_name: str | None
    study_date: str | None
    accession_number: str | None
    study_description: str | None
    modalities: tuple[str, ...]
    series: int
    instances: int


class ResultIndex:
    def __init__(self, engine: Engine):
        self.engine = engine

    def studies(self, filters: dict[str, str], limit: int, offset: int) -> list[StudySummary]:
        """Studies with result instances whose attributes equal ``filters`` (keywords of :data:`STUDY_FILTERS`;
        a trailing ``*`` in a value matches a prefix)."""
        query = select(ResultInstance.study_uid).group_by(ResultInstance.study_uid).order_by(ResultInstance.study_uid)
        for keyword, value in filters.items():
            column = STUDY_FILTERS[keyword]
            query = query.where(column.like(value[:-1].replace("%", r"\%").replace("_", r"\_") + "%", escape="\\")
                                if value.endswith("*") else column == value)
        r = ResultInstance
        with Session(self.engine) as session:
            uids = list(session.scalars(query.limit(limit).offset(offset)))
            # the page's summaries in two more queries: study-level attributes are the same on every instance
            summaries = {row[0]: row[1:] for row in session.execute(
                select(r.study_uid, func.min(r.patient_id), func.min(r.patient_name), func.min(r.study_date),
                       func.min(r.accession_number), func.min(r.study_description),
                       func.count(r.series_uid.distinct()), func.count())
                .where(r.study_uid.in_(uids)).group_by(r.study_uid))}
            modalities: dict[str, list[str]] = {uid: [] for uid in uids}
            for uid, modality in session.execute(select(r.study_uid, r.modality).where(r.study_uid.in_(uids))
                                                 .distinct().order_by(r.study_uid, r.modality)):
                modalities[uid].append(modality)
        out = []
        for uid in uids:
            *attributes, series, instances = summaries[uid]
            out.append(StudySummary(uid, *attributes, tuple(modalities[uid]), int(series), int(instances)))
        return out

    def series(self, study_uid: str) -> list[tuple[str, str, str | None, int | None, int]]:
        """``(series uid, modality, description, number, instances)`` of a study."""
        query = (select(ResultInstance.series_uid, ResultInstance.modality, ResultInstance.series_description,
                        ResultInstance.series_number, func.count())
                 .where(ResultInstance.study_uid == study_uid)
                 .group_by(ResultInstance.series_uid, ResultInstance.modality, ResultInstance.series_description,
                           ResultInstance.series_number)
                 .order_by(ResultInstance.series_number, ResultInstance.series_uid))
        with Session(self.engine) as session:
            return [tuple(row) for row in session.execute(query)]

    def instances(self, study_uid: str, series_uid: str | None = None,
                  instance_uid: str | None = None) -> list[ResultInstance]:
        query = select(ResultInstance).where(ResultInstance.study_uid == study_uid)
        if series_uid is not None:
            query = query.where(ResultInstance.series_uid == series_uid)
        if instance_uid is not None:
            query = query.where(ResultInstance.sop_instance_uid == instance_uid)
        query = query.order_by(ResultInstance.series_number, ResultInstance.instance_number,
                               ResultInstance.sop_instance_uid)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(query))
