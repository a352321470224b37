"""The service and a real Orthanc over real HTTP and DICOM: auto-delivery when a job succeeds, review before a
learned result goes, delivery state in the job, metrics and audit log, an Orthanc outage while a job finishes,
``kill -9`` of the server in the middle of a delivery (the series arrives exactly once either way), and study
lookup at submission."""

import json
import time

import httpx
import pydicom
import pytest
from api_server import TOKEN_SETTING
from job_inputs import write_brain_mri, write_mri
from orthanc import AET, PASSWORD, USER, OrthancServer
from pacs_fixtures import STUDY, job_result

from recon_service.jobs.results import result_dicom_files
from recon_service.local_server import LocalServer

ENV = {"RECON_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1", "RECON_WARMUP": "false"}


@pytest.fixture(scope="module")
def orthanc():
    server = OrthancServer().start()
    yield server
    server.close()


def pacs_config(tmp_path, orthanc, rate: float | None = None, lease_s: float = 120) -> str:
    web = {"kind": "dicomweb", "url": orthanc.dicomweb, "username": USER, "password_env": "TEST_ORTHANC_PASSWORD",
           "batch": 2}
    dimse = {"kind": "dimse", "host": "127.0.0.1", "port": orthanc.dicom_port, "called_ae": AET,
             "calling_ae": "RECONTEST", "timeout_s": 5}
    if rate is not None:
        dimse["max_instances_per_s"] = rate
    config = {"destinations": {"web": web, "dimse": dimse},
              "auto_deliver": {"*": ["dimse"], "mri-zero-filled": ["web"]}, "study_lookup": "web",
              "retry": {"initial_s": 0.5, "max_s": 1.0, "lease_s": lease_s, "poll_s": 0.1}}
    path = tmp_path / "pacs.json"
    path.write_text(json.dumps(config))
    return str(path)


def start_server(tmp_path, config: str, port: int | None = None) -> LocalServer:
    env = {**ENV, "RECON_PACS_CONFIG": config, "TEST_ORTHANC_PASSWORD": PASSWORD}
    return LocalServer(tmp_path / "data", port=port, tokens=TOKEN_SETTING, env=env, ready_timeout=120).start()


def wait_for(fetch, condition, timeout: float = 120.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while not condition(value := fetch()):
        assert time.monotonic() < deadline, f"{what}: {value}"
        time.sleep(0.1)
    return value


def study_of(server: LocalServer, job_id: str) -> str:
    return str(pydicom.dcmread(result_dicom_files(server.data_dir, job_id)[0]).StudyInstanceUID)


def delivered(deliveries: list[dict]) -> bool:
    return bool(deliveries) and all(d["state"] == "delivered" for d in deliveries)


def test_auto_delivery_review_metrics_and_audit(tmp_path, orthanc):
    server = start_server(tmp_path, pacs_config(tmp_path, orthanc))
    try:
        with server.client("submit-token") as client, server.client("review-token") as reviewer, \
                server.client("admin-token") as admin:
            plain = client.submit([write_mri(tmp_path / "plain.h5", slices=3)], "mri-zero-filled")["id"]
            learned = client.submit([write_brain_mri(tmp_path / "brain.h5", slices=2)], "mri-rim")["id"]
            for job_id in (plain, learned):
                assert client.wait(job_id, timeout=300)["state"] == "succeeded"
            # a plain pipeline's result goes by its rule (STOW-RS here), without review
            done = wait_for(lambda: client.deliveries(plain), delivered, what="plain delivery")
            assert [(d["destination"], d["instances"], d["requested_by"]) for d in done] == [("web", 3, "auto")]
            assert len(orthanc.instances_of_study(study_of(server, plain))) == 3
            assert client.job(plain)["deliveries"][0]["state"] == "delivered"
            # a learned one waits for review: nothing reaches the PACS until a reviewer approves
            [waiting] = client.deliveries(learned)
            assert (waiting["destination"], waiting["state"]) == ("dimse", "awaiting-approval")
            time.sleep(1.0)
            assert orthanc.instances_of_study(study_of(server, learned)) == []
            metrics = httpx.get(server.url + "/metrics").text
            assert 'recon_pacs_awaiting_approval{destination="dimse"} 1.0' in metrics
            assert 'recon_pacs_deliveries{destination="web",outcome="delivered"} 1.0' in metrics
            with pytest.raises(Exception, match="409"):
                client.deliver(learned, "web")  # no manual push around the review either
            with pytest.raises(Exception, match="403"):
                client.review(learned, "approve")  # a submitter is not a reviewer
            assert [d["state"] for d in reviewer.review(learned, "approve")["deliveries"]] == ["pending"]
            wait_for(lambda: client.deliveries(learned), delivered, what="learned delivery")
            assert len(orthanc.instances_of_study(study_of(server, learned))) == 2
            # a manual push of the learned result to the other destination; a second one is refused
            assert client.deliver(learned, "web")["state"] == "pending"
            with pytest.raises(Exception, match="409"):
                client.deliver(learned, "web")
            with pytest.raises(Exception, match="422"):
                client.deliver(learned, "nowhere")
            wait_for(lambda: client.deliveries(learned), delivered, what="manual delivery")
            assert len(orthanc.instances_of_study(study_of(server, learned))) == 2  # same UIDs: no duplicates
            metrics = httpx.get(server.url + "/metrics").text
            assert 'recon_pacs_outbox_depth{destination="dimse"} 0.0' in metrics
            assert 'recon_pacs_delivery_failures_total{destination="dimse"} 0.0' in metrics
            audit = admin.http.get("/v1/audit", params={"job_id": learned}).json()
            actions = [(e["action"], e["outcome"], e["actor"]) for e in audit]
            assert ("review.approve", "ok", "static-3") in actions
            assert ("pacs.deliver", "ok", "pacs-outbox") in actions and ("pacs.request", "ok", "static-1") in actions
            names = [d["name"] for d in client.http.get("/v1/pacs/destinations").json()]
            assert names == ["dimse", "web"] and PASSWORD not in client.http.get("/v1/pacs/destinations").text
    finally:
        server.stop()


def test_outage_while_a_job_finishes(tmp_path, orthanc):
    server = start_server(tmp_path, pacs_config(tmp_path, orthanc))
    try:
        with server.client("submit-token") as client:
            orthanc.stop()
            try:
                job_id = client.submit([write_mri(tmp_path / "a.h5", slices=4)], "mri-cg-sense")["id"]
                assert client.wait(job_id, timeout=300)["state"] == "succeeded"
                failing = wait_for(lambda: client.deliveries(job_id)[0], lambda d: d["failures"] >= 2,
                                   what="retries while Orthanc is down")
                assert failing["state"] in ("pending", "sending") and failing["last_error"]
                metrics = httpx.get(server.url + "/metrics").text
                assert 'recon_pacs_outbox_depth{destination="dimse"} 1.0' in metrics
            finally:
                orthanc.start()
            before = orthanc.new_instance_events()
            wait_for(lambda: client.deliveries(job_id), delivered, what="delivery after the outage")
            study = study_of(server, job_id)
            assert len(orthanc.instances_of_study(study)) == 4 and len(orthanc.series_of_study(study)) == 1
            assert orthanc.new_instance_events() - before == 4
    finally:
        server.stop()


def test_kill_9_in_the_middle_of_a_delivery(tmp_path, orthanc):
    """The server dies with half the series sent; after a restart the lease runs out, the delivery is taken up
    again and the series ends up in Orthanc exactly once."""
    config = pacs_config(tmp_path, orthanc, rate=3.0, lease_s=3)
    server = start_server(tmp_path, config)
    slices = 12
    try:
        with server.client("submit-token") as client:
            before = orthanc.new_instance_events()
            job_id = client.submit([write_mri(tmp_path / "k.h5", slices=slices)], "mri-cg-sense")["id"]
            assert client.wait(job_id, timeout=300)["state"] == "succeeded"
            midway = wait_for(lambda: client.deliveries(job_id)[0], lambda d: d["state"] == "sending" and
                              0 < d["sent"] < slices - 3, timeout=60, what="delivery under way")
        server.kill()
        study = study_of(server, job_id)
        partial = len(orthanc.instances_of_study(study))
        assert midway["sent"] <= partial < slices
        server = start_server(tmp_path, config, port=server.port)
        with server.client("submit-token") as client:
            [done] = wait_for(lambda: client.deliveries(job_id), delivered, timeout=120, what="after the restart")
            assert done["attempts"] == 2 and done["sent"] == slices
        assert sorted(orthanc.instances_of_study(study)) == sorted(
            str(pydicom.dcmread(p).SOPInstanceUID) for p in result_dicom_files(server.data_dir, job_id))
        assert len(orthanc.series_of_study(study)) == 1
        assert orthanc.new_instance_events() - before == slices
    finally:
        server.stop()


def test_study_lookup_at_submission(tmp_path, orthanc):
    job_result(tmp_path / "src", "source", slices=1, study={**STUDY, "accession_number": "ACC-LOOK"})
    [source] = result_dicom_files(tmp_path / "src", "source")
    orthanc.upload(source)
    uid = str(pydicom.dcmread(source).StudyInstanceUID)
    server = start_server(tmp_path, pacs_config(tmp_path, orthanc))
    try:
        with server.client("submit-token") as client:
            raw = write_mri(tmp_path / "l.h5", slices=1)
            by_qido = client.submit([raw], "mri-zero-filled", study_lookup={"AccessionNumber": "ACC-LOOK"})["id"]
            by_cfind = client.submit([raw], "mri-zero-filled", study={"PatientName": "Given^Name"},
                                     study_lookup={"StudyInstanceUID": uid, "source": "dimse"})["id"]
            for job_id in (by_qido, by_cfind):
                study = client.job(job_id)["study"]
                assert study["StudyInstanceUID"] == uid and study["PatientID"] == "MRN-0042"
                assert client.wait(job_id, timeout=300)["state"] == "succeeded"
                written = pydicom.dcmread(result_dicom_files(server.data_dir, job_id)[0])
                assert written.StudyInstanceUID == uid and written.AccessionNumber == "ACC-LOOK"
            assert client.job(by_qido)["study"]["PatientName"] == "Doe^Jane"
            assert client.job(by_cfind)["study"]["PatientName"] == "Given^Name"  # the request wins
            for lookup, status, words in [({"AccessionNumber": "NOPE"}, 422, "no study with AccessionNumber 'NOPE'"),
                                          ({"PatientName": "x"}, 422, "unknown lookup key"),
                                          ({"AccessionNumber": "A*"}, 422, "no wildcards"),
                                          ({"AccessionNumber": "ACC-LOOK", "source": "x"}, 422, "unknown PACS")]:
                response = client.http.post("/v1/jobs", data={"pipeline": "mri-zero-filled",
                                                              "study_lookup": json.dumps(lookup)},
                                            files=[("file", ("l.h5", raw.read_bytes()))])
                assert response.status_code == status and words in response.json()["detail"], response.text
            orthanc.stop()
            try:
                response = client.http.post("/v1/jobs", data={"pipeline": "mri-zero-filled",
                                                              "study_lookup": json.dumps({"AccessionNumber": "X"})},
                                            files=[("file", ("l.h5", raw.read_bytes()))])
                assert response.status_code == 502 and "retry later" in response.json()["detail"]
            finally:
                orthanc.start()
    finally:
        server.stop()
