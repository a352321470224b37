"""DICOM into the service and results back out over DICOMweb, against a real Orthanc and real sockets:

* Orthanc C-STOREs a CT series to our SCP; the series is grouped, routed by rule to a sparse-view simulation and
  reconstruction job, the job succeeds with metrics against the series, its result joins the source study and is
  delivered back into it in Orthanc;
* STOW-RS of series into /dicomweb/studies: one job per series, instances of one series sent in two requests
  grouped into one;
* a caller not allowed is refused and audited; malformed or unroutable objects get the DICOM status a sender
  understands and are stored nowhere;
* QIDO-RS / WADO-RS (instances, metadata, frames, rendered) serve the results.
"""

import io
import json
import time
import uuid
from email import message_from_bytes

import httpx
import numpy as np
import pydicom
import pytest
from api_server import TOKEN_SETTING
from orthanc import AET, PASSWORD, USER, OrthancServer
from pacs_fixtures import STUDY, ct_series
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from recon_service.jobs.results import result_dicom_files
from recon_service.local_server import LocalServer, free_port
from recon_service.pacs.config import PacsConfig
from recon_service.pacs.inbox import CANNOT_UNDERSTAND, NOT_MATCHING_SOP_CLASS, SOP_CLASS_NOT_SUPPORTED, Refused
from recon_service.pacs.inbox import check_instance as check

ENV = {"RECON_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1", "RECON_WARMUP": "false"}
RULES = [{"name": "ct-sparse-qa", "match": {"modality": "CT", "series_description": "^Head"},
          "pipeline": "ct-fbp", "simulate": {"views": 24, "size": 32, "slices": 4}}]


@pytest.fixture(scope="module")
def orthanc():
    server = OrthancServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, orthanc):
    tmp = tmp_path_factory.mktemp("inbound")
    scp_port = free_port()
    config = {"destinations": {"web": {"kind": "dicomweb", "url": orthanc.dicomweb, "username": USER,
                                       "password": PASSWORD}},
              "auto_deliver": {"ct-fbp": ["web"]},
              "inbound": {"ae_title": "RECONSCP", "port": scp_port, "allowed_callers": [AET, "TESTSCU"],
                          "series_timeout_s": 1.5, "rules": RULES},
              "retry": {"initial_s": 0.5, "max_s": 1, "poll_s": 0.1}}
    path = tmp / "pacs.json"
    path.write_text(json.dumps(config))
    server = LocalServer(tmp / "data", tokens=TOKEN_SETTING, env={**ENV, "RECON_PACS_CONFIG": str(path)},
                         ready_timeout=120)
    try:
        server.start()
        orthanc.add_modality("recon", "RECONSCP", "127.0.0.1", scp_port)
        server.scp_port = scp_port
        yield server
    finally:
        server.stop()


def jobs_of(client, owner_prefix: str) -> list[dict]:
    return [j for j in client.jobs(limit=100) if j["owner"].startswith(owner_prefix)]


def wait_for(fetch, condition, timeout: float = 120.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while not condition(value := fetch()):
        assert time.monotonic() < deadline, f"{what}: {value}"
        time.sleep(0.2)
    return value


def stow(url: str, token: str, payloads: list[bytes]) -> httpx.Response:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                    for p in payloads) + f"--{boundary}--\r\n".encode()
    return httpx.post(url + "/dicomweb/studies", content=body, timeout=60, headers={
        "Authorization": f"Bearer {token}",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})


def inbox_files(server) -> list:
    root = server.data_dir / "inbox"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_instance_checks(tmp_path):
    rules = PacsConfig.model_validate({"inbound": {"rules": RULES}}).inbound.rules
    ds = pydicom.dcmread(ct_series(tmp_path, slices=1)[0])
    assert check(ds, rules).name == "ct-sparse-qa"
    for change, status in [(lambda d: setattr(d, "SOPInstanceUID", "1.2.3..4"), CANNOT_UNDERSTAND),
                           (lambda d: delattr(d, "PixelData"), NOT_MATCHING_SOP_CLASS),
                           (lambda d: setattr(d, "SeriesDescription", "Chest"), SOP_CLASS_NOT_SUPPORTED),
                           (lambda d: setattr(d, "Modality", "MR"), SOP_CLASS_NOT_SUPPORTED)]:
        bad = pydicom.dcmread(ds.filename)
        change(bad)
        with pytest.raises(Refused) as refused:
            check(bad, rules)
        assert refused.value.status == status


def test_orthanc_sends_a_series_that_becomes_a_job_and_returns_to_the_study(service, orthanc, tmp_path):
    files = ct_series(tmp_path / "ct", slices=6, study={**STUDY, "accession_number": "CT-1"})
    source_study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    series_ids = {orthanc.upload(f)["ParentSeries"] for f in files}
    sent = orthanc.send_to_modality("recon", sorted(series_ids))
    assert sent["status"] == 200, sent
    with service.client("admin-token") as client:
        [job] = wait_for(lambda: jobs_of(client, "dimse:ORTHANC"), lambda j: len(j) == 1, what="job from C-STORE")
        done = client.wait(job["id"], timeout=300)
        assert done["state"] == "succeeded", done
        assert done["pipeline"] == "ct-fbp" and done["study"]["StudyInstanceUID"] == source_study
        assert done["study"]["AccessionNumber"] == "CT-1"
        assert {"psnr", "ssim", "nmse"} <= set(done["metrics"])  # scored against the received series
        audit = client.http.get("/v1/audit", params={"job_id": job["id"]}).json()
        assert any(e["action"] == "dicom.route" and "6 instances via dimse from ORTHANC" in e["detail"]
                   for e in audit)
        # the result joins the source study in Orthanc (auto-delivery by the ct-fbp rule)
        wait_for(lambda: client.deliveries(job["id"]), lambda d: d and d[0]["state"] == "delivered",
                 what="delivery back")
    assert len(orthanc.series_of_study(source_study)) == 2
    assert inbox_files(service) == []  # routed series leave the inbox


def test_stow_rs_groups_series_into_jobs(service, tmp_path):
    first = ct_series(tmp_path / "a", slices=5, description="Head CT A")
    second = ct_series(tmp_path / "b", slices=4, description="Head CT B")
    with service.client("admin-token") as client:
        before = {j["id"] for j in jobs_of(client, "stow:")}
        # series A in two requests (within the grouping timeout), series B in one
        assert stow(service.url, "submit-token", [p.read_bytes() for p in first[:3]]).status_code == 200
        answer = stow(service.url, "submit-token", [p.read_bytes() for p in first[3:] + second])
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/dicom+json"
        assert len(answer.json()["00081199"]["Value"]) == 2 + 4
        new = wait_for(lambda: [j for j in jobs_of(client, "stow:static-1") if j["id"] not in before],
                       lambda j: len(j) == 2, what="two STOW jobs")
        finished = [client.wait(j["id"], timeout=300) for j in new]
        assert {j["state"] for j in finished} == {"succeeded"}
        routes = [e["detail"] for e in client.http.get("/v1/audit", params={"limit": 200}).json()
                  if e["action"] == "dicom.route"]
        for series, count in ((first, 5), (second, 4)):
            uid = str(pydicom.dcmread(series[0]).SeriesInstanceUID)
            assert any(f"series {uid} ({count} instances via stow from static-1)" in d for d in routes)


def test_refusals_store_nothing(service, tmp_path):
    from pynetdicom import AE

    good = pydicom.dcmread(ct_series(tmp_path / "g", slices=1)[0])
    # a caller that is not allowed: the association is refused and audited
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(good.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", service.scp_port, ae_title="RECONSCP")
    assert assoc.is_rejected
    # an allowed caller sending an image no rule takes, and an object without pixel data
    unroutable = pydicom.dcmread(good.filename)
    unroutable.SeriesDescription, unroutable.SeriesInstanceUID = "Chest CT", generate_uid()
    no_pixels = pydicom.dcmread(good.filename)
    del no_pixels.PixelData
    no_pixels.SeriesInstanceUID = generate_uid()
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(good.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", service.scp_port, ae_title="RECONSCP")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(unroutable).Status == SOP_CLASS_NOT_SUPPORTED
        assert assoc.send_c_store(no_pixels).Status == NOT_MATCHING_SOP_CLASS
    finally:
        assoc.release()
    # STOW-RS: garbage and an unroutable instance -> 409 with the statuses; a wrong media type -> 415
    buffer = io.BytesIO()
    unroutable.save_as(buffer)
    answer = stow(service.url, "submit-token", [b"not dicom at all", buffer.getvalue()])
    assert answer.status_code == 409
    reasons = sorted(item["00081197"]["Value"][0] for item in answer.json()["00081198"]["Value"])
    assert reasons == sorted([CANNOT_UNDERSTAND, SOP_CLASS_NOT_SUPPORTED])
    wrong = httpx.post(service.url + "/dicomweb/studies", content=b"x", headers={
        "Authorization": "Bearer submit-token", "Content-Type": "application/json"})
    assert wrong.status_code == 415
    assert httpx.post(service.url + "/dicomweb/studies", content=b"x", headers={
        "Authorization": "Bearer read-token", "Content-Type": "application/json"}).status_code == 403
    for series in (unroutable, no_pixels):
        assert not (service.data_dir / "inbox" / str(series.SeriesInstanceUID)).exists()
    with service.client("admin-token") as client:
        audit = client.http.get("/v1/audit", params={"limit": 200}).json()
    assert any(e["action"] == "dicom.associate" and e["outcome"] == "forbidden" and "STRANGER" in e["detail"]
               for e in audit)
    rejected = [e["detail"] for e in audit if e["action"] == "dicom.receive" and e["outcome"] == "rejected"]
    assert any("0x0122" in d for d in rejected) and any("0xA900" in d for d in rejected)
    assert any("0xC000" in d for d in rejected)


def test_dicomweb_serves_the_results(service, tmp_path):
    from job_inputs import write_ct

    from recon_service.client import ReconClient

    with ReconClient(service.url, "submit-token") as client:
        job_id = client.submit([write_ct(tmp_path / "s.h5", slices=3)], "ct-fbp",
                               study={"PatientID": "QIDO-1", "AccessionNumber": "ACC-Q"})["id"]
        assert client.wait(job_id, timeout=300)["state"] == "succeeded"
    files = result_dicom_files(service.data_dir, job_id)
    first = pydicom.dcmread(files[0])
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    web = httpx.Client(base_url=service.url + "/dicomweb", headers={"Authorization": "Bearer read-token"}, timeout=60)
    [found] = web.get("/studies", params={"PatientID": "QIDO-1"}).json()
    assert found["0020000D"]["Value"] == [study] and found["00080050"]["Value"] == ["ACC-Q"]
    assert found["00201208"]["Value"] == [3] and found["00080061"]["Value"] == ["CT"]
    assert web.get("/studies", params={"AccessionNumber": "ACC-Q*"}).json()[0]["0020000D"]["Value"] == [study]
    assert web.get("/studies", params={"PatientID": "nobody"}).json() == []
    [listed] = web.get(f"/studies/{study}/series").json()
    assert listed["0020000E"]["Value"] == [series] and listed["00201209"]["Value"] == [3]
    instances = web.get(f"/studies/{study}/series/{series}/instances").json()
    uids = [i["00080018"]["Value"][0] for i in instances]
    assert sorted(uids) == sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in files)
    # WADO-RS: the whole series as multipart/related application/dicom, byte for byte the stored files
    response = web.get(f"/studies/{study}/series/{series}")
    assert response.status_code == 200 and 'type="application/dicom"' in response.headers["content-type"]
    message = message_from_bytes(b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
                                 + response.content)
    parts = [p.get_payload(decode=True) for p in message.get_payload()]
    assert sorted(parts) == sorted(f.read_bytes() for f in files)
    metadata = web.get(f"/studies/{study}/series/{series}/metadata").json()
    assert len(metadata) == 3 and "7FE00010" not in metadata[0] and metadata[0]["00080060"]["Value"] == ["CT"]
    one = uids[0]
    frame = web.get(f"/studies/{study}/series/{series}/instances/{one}/frames/1")
    stored = pydicom.dcmread(next(f for f in files if pydicom.dcmread(f).SOPInstanceUID == one))
    assert stored.PixelData in frame.content
    png = web.get(f"/studies/{study}/series/{series}/instances/{one}/rendered", headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(png.content)))
    assert image.shape == (stored.Rows, stored.Columns) and image.max() > image.min()
    jpeg = web.get(f"/studies/{study}/series/{series}/instances/{one}/frames/1/rendered",
                   headers={"Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
    assert web.get(f"/studies/{study}/series/1.2.3").status_code == 404
    assert web.get(f"/studies/{study}/series/{series}/instances/{one}/frames/2").status_code == 404
    assert httpx.get(service.url + "/dicomweb/studies").status_code == 401
