"""The DICOMweb result index's study search on a real database (SQLite and PostgreSQL): several studies per page,
each summarised from its own instances only."""

from sqlalchemy.orm import Session

from recon_service.db.schema import ResultInstance
from recon_service.jobs.store import JobStore, NewInput
from recon_service.pacs.result_index import ResultIndex, add_index


def _instance(job_id: str, study: str, series: str, n: int, modality: str, **attrs) -> ResultInstance:
    return ResultInstance(sop_instance_uid=f"{series}.{n}", series_uid=series, study_uid=study, job_id=job_id,
                          path=f"results/{job_id}/{series}/{n}.dcm", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                          instance_number=n, series_number=1, modality=modality, **attrs)


def test_a_page_of_studies_summarises_each_from_its_own_instances(db_engine):
    store = JobStore(db_engine)
    job, _ = store.create("mri-zero-filled", [NewInput(filename="a.h5", path="uploads/a.h5", size=1, sha256="ab" * 32,
                                                        kind="fastmri")], owner="alice")
    p1 = {"patient_id": "P1", "patient_name": "One^Patient", "study_date": "20261201", "accession_number": "ACC1",
          "study_description": "brain"}
    p2 = {"patient_id": "P2", "patient_name": "Two^Patient", "study_date": "20261202", "accession_number": "ACC2",
          "study_description": "head"}
    rows = ([_instance(job.id, "1.1", "1.1.1", n, "MR", **p1) for n in range(3)]
            + [_instance(job.id, "1.1", "1.1.2", n, "OT", **p1) for n in range(2)]
            + [_instance(job.id, "1.2", "1.2.1", n, "CT", **p2) for n in range(4)]
            + [_instance(job.id, "1.3", "1.3.1", 0, "MR")])
    with Session(db_engine) as session, session.begin():
        add_index(session, rows)
    index = ResultIndex(db_engine)
    first, second, third = index.studies({}, limit=10, offset=0)
    assert (first.study_uid, first.patient_id, first.accession_number, first.study_description) == \
        ("1.1", "P1", "ACC1", "brain")
    assert (first.modalities, first.series, first.instances) == (("MR", "OT"), 2, 5)
    assert (second.patient_name, second.study_date, second.modalities, second.series, second.instances) == \
        ("Two^Patient", "20261202", ("CT",), 1, 4)
    assert (third.patient_id, third.modalities, third.instances) == (None, ("MR",), 1)
    assert [s.study_uid for s in index.studies({}, limit=1, offset=1)] == ["1.2"]
    assert [s.study_uid for s in index.studies({"AccessionNumber": "ACC*"}, limit=10, offset=0)] == ["1.1", "1.2"]
    assert index.studies({"PatientID": "nobody"}, limit=10, offset=0) == []
