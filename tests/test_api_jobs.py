"""Jobs over real HTTP: submit, status, list, idempotency, cancel, results, health, readiness, metrics.

One ``recon serve`` subprocess per module, an API-only node (RECON_RUN_WORKERS=false), so submitted jobs stay
queued; the jobs' runs are tested in test_service_e2e.py.
"""

import hashlib
import time

import pytest
from api_server import TOKEN_NAMES, run_server, write_fastmri_file, write_sinogram_file
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("api-jobs"), max_upload_mb="0.25", run_workers="false") as srv:
        yield srv


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    return {"mri": write_fastmri_file(tmp / "knee.h5"), "ct": write_sinogram_file(tmp / "chest_sino.h5")}


@pytest.fixture(scope="module")
def submitter(server):
    with server.client("submit-token") as client:
        yield client


def submit(client, path, pipeline, **data):
    with open(path, "rb") as f:
        return client.post("/v1/jobs", files=[("file", (path.name, f))], data={"pipeline": pipeline, **data})


def test_submit_fastmri_and_sinogram_are_queued_and_stored(server, submitter, files):
    for kind, pipeline, raw_kind in (("mri", "mri-cg-sense", "fastmri"), ("ct", "ct-fbp", "sinogram")):
        r = submit(submitter, files[kind], pipeline, params='{"max_iter": 5}' if kind == "mri" else "{}")
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["state"] == "queued" and len(body["id"]) == 32
        assert r.headers["location"] == f"/v1/jobs/{body['id']}"

        job = submitter.get(r.headers["location"]).json()
        assert job["id"] == body["id"] and job["pipeline"] == pipeline and job["state"] == "queued"
        assert job["progress"] == 0 and job["error"] is None and job["results"] == []
        assert job["owner"] == TOKEN_NAMES["submit-token"]
        assert job["params"] == ({"max_iter": 5} if kind == "mri" else {})
        data = files[kind].read_bytes()
        [stored] = job["inputs"]
        assert stored == {"position": 0, "filename": files[kind].name, "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest(), "kind": raw_kind}
        # the upload is on disk, complete, under the layout of the storage contract
        on_disk = server.data_dir / "uploads" / body["id"] / f"0-{files[kind].name}"
        assert on_disk.read_bytes() == data
        assert sorted(p.name for p in on_disk.parent.iterdir()) == [on_disk.name]  # no temp files left


def test_unknown_job_is_404(submitter):
    for path in ("/v1/jobs/0123456789abcdef0123456789abcdef", "/v1/jobs/nope/result?format=png"):
        r = submitter.get(path)
        assert r.status_code == 404 and "no job" in r.json()["detail"]
    assert submitter.post("/v1/jobs/0123456789abcdef0123456789abcdef/cancel").status_code == 404


def test_list_with_filters(server, submitter, files):
    ct_ids = {submit(submitter, files["ct"], "ct-sirt").json()["id"] for _ in range(2)}
    mri_id = submit(submitter, files["mri"], "mri-zero-filled").json()["id"]

    listed = submitter.get("/v1/jobs", params={"pipeline": "ct-sirt"}).json()
    assert {j["id"] for j in listed["items"]} == ct_ids
    assert listed["limit"] == 50 and listed["offset"] == 0

    queued = submitter.get("/v1/jobs", params={"state": "queued", "limit": 500}).json()["items"]
    assert ct_ids | {mri_id} <= {j["id"] for j in queued}
    assert all(j["state"] == "queued" for j in queued)
    created = [j["created_at"] for j in queued]
    assert created == sorted(created, reverse=True)  # newest first

    first = submitter.get("/v1/jobs", params={"limit": 1}).json()["items"]
    second = submitter.get("/v1/jobs", params={"limit": 1, "offset": 1}).json()["items"]
    assert first[0]["id"] == mri_id and len(second) == 1 and second[0]["id"] in ct_ids
    assert submitter.get("/v1/jobs", params={"state": "succeeded"}).json()["items"] == []

    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": 2**63}, {"state": "sleeping"}):
        r = submitter.get("/v1/jobs", params=bad)
        assert r.status_code == 422, bad
    with server.client("admin-token") as admin:  # an offset past SQLite's integers once answered 500
        assert admin.get("/v1/audit", params={"offset": 2**63}).status_code == 422


def test_idempotency_key_returns_the_same_job(server, submitter, files):
    headers = {"Idempotency-Key": "order-4711"}
    with open(files["ct"], "rb") as f:
        first = submitter.post("/v1/jobs", files=[("file", ("a.h5", f))], data={"pipeline": "ct-fbp"},
                               headers=headers)
    assert first.status_code == 202
    uploads = server.uploads()
    with open(files["ct"], "rb") as f:
        again = submitter.post("/v1/jobs", files=[("file", ("a.h5", f))], data={"pipeline": "ct-fbp"},
                               headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert server.uploads() == uploads  # the repeat stored nothing
    # keys belong to the token that used them: another token gets its own job
    with server.client("admin-token") as admin, open(files["ct"], "rb") as f:
        other = admin.post("/v1/jobs", files=[("file", ("a.h5", f))], data={"pipeline": "ct-fbp"}, headers=headers)
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]


def test_cancel_a_queued_job_and_results_of_unfinished_jobs(submitter, files):
    job_id = submit(submitter, files["mri"], "mri-zero-filled").json()["id"]
    r = submitter.get(f"/v1/jobs/{job_id}/result", params={"format": "nifti"})
    assert r.status_code == 409 and "queued" in r.json()["detail"]

    r = submitter.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "cancelled" and job["cancel_requested"] and job["finished_at"] is not None
    assert submitter.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"

    again = submitter.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    for fmt in ("dicom", "nifti", "png", "metrics"):
        r = submitter.get(f"/v1/jobs/{job_id}/result", params={"format": fmt})
        assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    assert submitter.get(f"/v1/jobs/{job_id}/result", params={"format": "jpeg"}).status_code == 422
    assert submitter.get(f"/v1/jobs/{job_id}/result").status_code == 422


def test_catalog_lists_pipelines_and_model_cards(submitter):
    pipelines = {p["name"]: p for p in submitter.get("/v1/pipelines").json()}
    assert pipelines["mri-cg-sense"]["input_kinds"] == ["fastmri", "ismrmrd"]
    assert pipelines["ct-fbp"]["input_kinds"] == ["sinogram"] and pipelines["ct-fbp"]["defaults"]["filter"] == "ramp"
    assert {"model_id", "engine"} <= set(pipelines["mri-rim"]["defaults"]) and pipelines["mri-rim"]["learned"]
    iterations = {p["name"]: p for p in pipelines["ct-sirt"]["parameters"]}["iterations"]
    assert iterations == {"name": "iterations", "type": "integer", "default": 100, "description": "SIRT iterations",
                          "minimum": 1, "maximum": 5000, "exclusive_minimum": False, "exclusive_maximum": False,
                          "choices": None, "pattern": None, "nullable": False, "service": False,
                          "allowed": "an integer from 1 to 5000"}
    fbp = {p["name"]: p for p in pipelines["ct-fbp"]["parameters"]}
    assert fbp["filter"]["choices"] == ["ramp", "shepp-logan", "cosine", "hamming", "hann"]
    assert fbp["device"]["service"] and not fbp["cutoff"]["service"]
    assert {"mri-admm-tv", "mri-admm-tv-2d", "ct-admm-tv", "ct-admm-tv-2d"} <= set(pipelines)
    cards = {c["id"]: c for c in submitter.get("/v1/models").json()}
    assert {"recurrentvarnet-brain-sim", "rim-brain-sim"} <= set(cards)
    card = cards["rim-brain-sim"]
    assert card["kind"] == "rim" and len(card["sha256"]) == 64 and "model-matmul.onnx" in card["engines"]
    assert "training" in card and "metrics" in card


def test_health_ready_and_metrics(server, submitter, files):
    assert server.client().get("/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 60
    while (r := server.client().get("/readyz")).status_code != 200:
        assert r.status_code == 503 and r.json()["status"] == "warming up", r.text
        assert time.monotonic() < deadline, "not ready after 60 s"
        time.sleep(0.3)
    ready = r.json()
    assert ready["ready"] and ready["provider"] == "CPUExecutionProvider"
    assert set(ready["models"]) == {"recurrentvarnet-brain-sim", "rim-brain-sim", "ct-prior-brain-sim",
                                    "mri-prior-ambient-brain-sim"}

    submit(submitter, files["ct"], "ct-cgls")
    queued = len(submitter.get("/v1/jobs", params={"state": "queued", "limit": 500}).json()["items"])
    cancelled = len(submitter.get("/v1/jobs", params={"state": "cancelled", "limit": 500}).json()["items"])
    text = server.client().get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    jobs = {s.labels["state"]: s.value for s in families["recon_jobs"].samples}
    assert set(jobs) == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert jobs["queued"] == queued >= 1 and jobs["running"] == 0
    assert jobs["cancelled"] == cancelled
    assert families["recon_queue_depth"].samples[0].value == queued
    assert families["recon_job_duration_seconds"].type == "histogram"
    assert families["recon_engine_provider_info"].samples[0].labels == {"provider": "CPUExecutionProvider"}
    requests = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
                for s in families["recon_http_requests"].samples if s.name == "recon_http_requests_total"}
    assert requests[("POST", "/v1/jobs", "202")] >= 1
    assert requests[("GET", "/v1/jobs/{job_id}", "404")] >= 1  # by route template, not by raw path


def test_full_queue_answers_503_with_retry_after(tmp_path, files):
    with run_server(tmp_path, queue_size="1", warmup="false", run_workers="false") as srv, \
            srv.client("submit-token") as client:
        assert srv.client().get("/readyz").json()["status"] == "disabled"
        assert submit(client, files["ct"], "ct-fbp").status_code == 202
        before = srv.uploads()
        r = submit(client, files["ct"], "ct-fbp")
        assert r.status_code == 503 and r.headers["retry-after"] == "30" and "queued" in r.json()["detail"]
        assert srv.uploads() == before  # the refused upload is gone
