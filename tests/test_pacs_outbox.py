"""The outbox against a real Orthanc: STOW-RS and C-STORE deliveries, an outage with retries, exactly once,
approval, a destination that refuses the data, and study lookup by QIDO-RS and C-FIND."""

import json
import time

import pydicom
import pytest
from orthanc import AET, PASSWORD, USER, OrthancServer
from pacs_fixtures import STUDY, succeeded_job

from recon_service.context import ServiceContext
from recon_service.jobs.results import result_dicom_files
from recon_service.pacs.config import PacsConfig
from recon_service.pacs.lookup import LookupUnavailable, StudyNotFound, lookup_study
from recon_service.pacs.outbox import (
    AWAITING_APPROVAL,
    DELIVERED,
    FAILED,
    PENDING,
    Outbox,
    OutboxRunner,
    planned_deliveries,
)
from recon_service.review.decisions import Reviews
from recon_service.settings import Settings

SECRET = b"s" * 32


@pytest.fixture(scope="module")
def orthanc():
    server = OrthancServer().start()
    yield server
    server.close()


def config_for(orthanc: OrthancServer, **extra) -> PacsConfig:
    return PacsConfig.model_validate({
        "destinations": {
            "web": {"kind": "dicomweb", "url": orthanc.dicomweb, "username": USER, "password": PASSWORD, "batch": 3},
            "dimse": {"kind": "dimse", "host": "127.0.0.1", "port": orthanc.dicom_port, "called_ae": AET},
            "research": {"kind": "dicomweb", "url": orthanc.dicomweb, "username": USER, "password": PASSWORD,
                         "deidentify": True}},
        "retry": {"initial_s": 0.2, "max_s": 0.5, "lease_s": 5, "poll_s": 0.05}, **extra})


@pytest.fixture
def service(tmp_path):
    return ServiceContext.create(Settings(data_dir=tmp_path / "data"))


def run_until_settled(runner: OutboxRunner, job_id: str, timeout: float = 60.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        runner.run_once()
        found = runner.outbox.for_job(job_id)
        if all(d.state in (DELIVERED, FAILED) for d in found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def study_uid_of(data_dir, job_id: str) -> str:
    return str(pydicom.dcmread(result_dicom_files(data_dir, job_id)[0]).StudyInstanceUID)


@pytest.mark.parametrize("destination", ["web", "dimse"])
def test_delivery_with_the_uncertainty_series(orthanc, service, destination):
    data_dir = service.settings.data_dir
    outbox = Outbox(service.engine, config_for(orthanc))
    job_id = succeeded_job(service.store, data_dir, slices=4, uncertainty=True)
    outbox.request(job_id, destination, "static-1")
    runner = OutboxRunner(outbox, data_dir, service.audit, SECRET)
    [delivery] = run_until_settled(runner, job_id)
    assert (delivery.state, delivery.instances, delivery.sent, delivery.attempts) == (DELIVERED, 8, 8, 1)
    paths = result_dicom_files(data_dir, job_id)
    ours = sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in paths)
    study = study_uid_of(data_dir, job_id)
    assert sorted(orthanc.instances_of_study(study)) == ours
    assert len(orthanc.series_of_study(study)) == 2  # the image series and the uncertainty map
    [entry] = [e for e in service.audit.entries(job_id=job_id) if e.action == "pacs.deliver"]
    assert entry.outcome == "ok" and entry.study_uid == study and f"destination {destination}" in entry.detail


def test_outage_retries_then_exactly_once(orthanc, service):
    """Orthanc is down while the job finishes: the delivery fails, waits, and is retried with the same
    instance UIDs once Orthanc is back. Orthanc then holds the series once, and stored each instance once."""
    data_dir = service.settings.data_dir
    outbox = Outbox(service.engine, config_for(orthanc))
    runner = OutboxRunner(outbox, data_dir, service.audit, SECRET)
    orthanc.stop()
    try:
        job_id = succeeded_job(service.store, data_dir, slices=5, planned=[("dimse", PENDING)])
        deadline = time.monotonic() + 30
        while (d := outbox.for_job(job_id)[0]).failures < 2:  # two attempts failed, each rescheduled
            runner.run_once()
            assert time.monotonic() < deadline, d
            time.sleep(0.05)
        assert d.state == PENDING and "association" in d.last_error and d.next_attempt_at is not None
        retries = [e for e in service.audit.entries(job_id=job_id) if e.action == "pacs.deliver"]
        assert {e.outcome for e in retries} == {"retry"}
        assert outbox.figures()["dimse"]["failures"] >= 2
    finally:
        orthanc.start()
    before = orthanc.new_instance_events()
    [delivery] = run_until_settled(runner, job_id)
    assert delivery.state == DELIVERED and delivery.failures >= 2
    study = study_uid_of(data_dir, job_id)
    assert len(orthanc.instances_of_study(study)) == 5 and len(orthanc.series_of_study(study)) == 1
    assert orthanc.new_instance_events() - before == 5
    # a second, manual send of the same result to the same PACS adds nothing (same UIDs)
    outbox.request(job_id, "web", "static-1")
    run_until_settled(runner, job_id)
    assert len(orthanc.instances_of_study(study)) == 5 and orthanc.new_instance_events() - before == 5


def test_auto_rules_and_approval(orthanc, service):
    data_dir = service.settings.data_dir
    config = config_for(orthanc, auto_deliver={"*": ["web"], "mri-rim": ["web", "dimse"]})
    outbox = Outbox(service.engine, config)
    plain = planned_deliveries(config, "mri-cg-sense", learned=False)
    learned = planned_deliveries(config, "mri-rim", learned=True)
    assert plain == [("web", PENDING)] and learned == [("web", AWAITING_APPROVAL), ("dimse", AWAITING_APPROVAL)]
    job_id = succeeded_job(service.store, data_dir, pipeline="mri-rim", planned=learned)
    runner = OutboxRunner(outbox, data_dir, service.audit, SECRET)
    assert not runner.run_once()  # nothing is due: both wait for review
    study = study_uid_of(data_dir, job_id)
    assert orthanc.instances_of_study(study) == []
    assert outbox.figures()["web"][AWAITING_APPROVAL] == 1
    Reviews(service.engine, config).decide(job_id, "mri-rim", "approve", "", "static-3")
    assert {d.state for d in run_until_settled(runner, job_id)} == {DELIVERED}
    assert len(orthanc.instances_of_study(study)) == 4


def test_deidentified_destination(orthanc, service):
    data_dir = service.settings.data_dir
    outbox = Outbox(service.engine, config_for(orthanc))
    job_id = succeeded_job(service.store, data_dir, slices=3)
    outbox.request(job_id, "research", "static-1")
    run_until_settled(OutboxRunner(outbox, data_dir, service.audit, SECRET), job_id)
    study = study_uid_of(data_dir, job_id)
    from recon_service.pacs.deidentify import remap_uid

    assert orthanc.instances_of_study(study) == []  # the original identity never reached it
    stored = orthanc.instances_of_study(remap_uid(study, SECRET))
    assert len(stored) == 3
    found = orthanc.json("/studies?expand")
    [ours] = [s for s in found if s["MainDicomTags"]["StudyInstanceUID"] == remap_uid(study, SECRET)]
    assert ours["PatientMainDicomTags"].get("PatientName", "") == ""
    assert ours["PatientMainDicomTags"]["PatientID"].startswith("ANON")
    assert STUDY["patient_id"] not in json.dumps(ours)


def test_permanent_refusal_and_unknown_destination(orthanc, service):
    data_dir = service.settings.data_dir
    config = config_for(orthanc)
    outbox = Outbox(service.engine, config)
    job_id = succeeded_job(service.store, data_dir, slices=2)
    outbox.request(job_id, "web", "static-1")
    # the destination is removed from the configuration while the delivery waits
    trimmed = PacsConfig.model_validate({**config.model_dump(), "destinations": {
        k: v for k, v in config.model_dump()["destinations"].items() if k != "web"}})
    runner = OutboxRunner(Outbox(service.engine, trimmed), data_dir, service.audit, SECRET)
    [delivery] = run_until_settled(runner, job_id)
    assert delivery.state == FAILED and "unknown PACS destination 'web'" in delivery.last_error
    # a failed delivery can be asked for again once the destination is back
    again = outbox.request(job_id, "web", "static-1")
    assert again.state == PENDING
    [delivery] = run_until_settled(OutboxRunner(outbox, data_dir, service.audit, SECRET), job_id)
    assert delivery.state == DELIVERED


def test_study_lookup(orthanc, tmp_path):
    from pacs_fixtures import job_result

    job_result(tmp_path, "source", slices=1, study={**STUDY, "accession_number": "LOOKUP-1"})
    [source] = result_dicom_files(tmp_path, "source")
    orthanc.upload(source)
    uid = str(pydicom.dcmread(source).StudyInstanceUID)
    config = config_for(orthanc)
    for name in ("web", "dimse"):
        found = lookup_study(config.destination(name), "AccessionNumber", "LOOKUP-1")
        assert found["StudyInstanceUID"] == uid and found["PatientName"] == "Doe^Jane"
        assert found["PatientID"] == "MRN-0042" and found["PatientBirthDate"] == "19700101"
        assert lookup_study(config.destination(name), "StudyInstanceUID", uid)["AccessionNumber"] == "LOOKUP-1"
        with pytest.raises(StudyNotFound, match="no study with AccessionNumber 'NOPE'"):
            lookup_study(config.destination(name), "AccessionNumber", "NOPE")
    down = PacsConfig.model_validate({"destinations": {
        "x": {"kind": "dimse", "host": "127.0.0.1", "port": 9, "called_ae": "X", "timeout_s": 2}}})
    with pytest.raises(LookupUnavailable):
        lookup_study(down.destination("x"), "AccessionNumber", "LOOKUP-1")


def test_pacs_check_probes_every_destination(orthanc, tmp_path, run_recon):
    config = config_for(orthanc).model_dump(mode="json")
    config["destinations"]["down"] = {"kind": "dimse", "host": "127.0.0.1", "port": 9, "called_ae": "NOBODY",
                                      "timeout_s": 2}
    config["destinations"]["wrong-password"] = {"kind": "dicomweb", "url": orthanc.dicomweb, "username": USER,
                                                "password": "wrong"}
    path = tmp_path / "pacs.json"
    path.write_text(json.dumps(config))
    proc = run_recon("pacs", "check", "--config", str(path), check=False)
    assert proc.returncode == 1, proc.stderr
    lines = dict(line.strip().split(": ", 1) for line in proc.stdout.splitlines()[1:])
    assert lines["dimse (dimse)"] == "ok, C-ECHO succeeded"
    assert lines["web (dicomweb)"] == "ok, QIDO-RS answered HTTP 200"
    assert lines["down (dimse)"].startswith("FAILED, C-ECHO to NOBODY@127.0.0.1:9: no association")
    assert lines["wrong-password (dicomweb)"].endswith("HTTP 401")
    del config["destinations"]["down"], config["destinations"]["wrong-password"]
    path.write_text(json.dumps(config))
    assert run_recon("pacs", "check", "--config", str(path)).returncode == 0
