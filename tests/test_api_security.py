"""Authentication on every route, the audit trail of patient-data calls, and no patient data in the logs."""

import json
import re

import pydicom
import pytest
from api_server import TOKEN_NAMES, copy_dicom, run_server, write_fastmri_file
from fastapi.routing import APIRoute

from recon_service.api import create_app
from recon_service.settings import Settings

PUBLIC = {"/healthz", "/readyz", "/metrics"}
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/review"}  # /review: the tool's static pages
KNOWN_PROTECTED = {("post", "/v1/jobs"), ("get", "/v1/jobs"), ("get", "/v1/jobs/{job_id}"),
                   ("post", "/v1/jobs/{job_id}/cancel"), ("get", "/v1/jobs/{job_id}/result"),
                   ("get", "/v1/pipelines"), ("get", "/v1/models"), ("get", "/v1/audit"),
                   ("get", "/v1/pacs/destinations"), ("get", "/v1/jobs/{job_id}/deliveries"),
                   ("post", "/v1/jobs/{job_id}/deliveries"), ("post", "/v1/jobs/{job_id}/review"),
                   ("post", "/dicomweb/studies"), ("get", "/dicomweb/studies"),
                   ("get", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered")}
# the routes a review token may call; every other protected route refuses it
REVIEW_ROUTES = {("post", "/v1/jobs/{job_id}/review")}
PATIENT_NAME = "Secretname^Janet"
PATIENT_ID = "PID-99871234"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("api-security"), warmup="false", run_workers="false") as srv:
        yield srv


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    return {"mri": write_fastmri_file(tmp / "knee.h5"), "dicom": copy_dicom(tmp / "study.dcm")}


@pytest.fixture(scope="module")
def job(server, files):
    """A queued job with a DICOM study and a patient named in the request's study."""
    with server.client("submit-token") as client, open(files["mri"], "rb") as raw, open(files["dicom"], "rb") as dcm:
        r = client.post("/v1/jobs", files=[("file", ("knee.h5", raw)), ("file", ("study.dcm", dcm))],
                        data={"pipeline": "mri-zero-filled",
                              "study": json.dumps({"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID})})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _all_routes(app):
    """(path, methods, in schema, is an API route) of every route, routers flattened."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.16x keeps included routers lazily
    except ImportError:
        return [(r.path, getattr(r, "methods", None) or set(), getattr(r, "include_in_schema", False),
                 isinstance(r, APIRoute)) for r in app.routes]
    return [(rc.path, getattr(rc, "methods", None) or set(), getattr(rc, "include_in_schema", False),
             isinstance(rc.original_route, APIRoute)) for rc in iter_route_contexts(app.routes)]


def test_no_route_escapes_the_schema(tmp_path):
    """Every API route is in the OpenAPI document (so the enumeration below sees it); the only other routes
    are FastAPI's documentation pages."""
    app = create_app(Settings(data_dir=tmp_path))
    routes = _all_routes(app)
    assert [path for path, _, in_schema, api in routes if api and not in_schema] == []
    others = {path for path, _, _, api in routes if not api}
    assert others == DOCS
    operations = {(m.lower(), path) for path, methods, _, api in routes if api for m in methods}
    schema = app.openapi()["paths"]
    assert operations == {(m, path) for path, ops in schema.items() for m in ops}
    assert operations >= KNOWN_PROTECTED | {("get", p) for p in PUBLIC}


def test_every_non_public_route_needs_a_valid_token_with_its_scope(server, job):
    schema = server.client().get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "API token or OIDC JWT"}
    checked = set()
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            url = path.replace("{job_id}", job).replace("{frame}", "1").replace("{index}", "0")
            url = url.replace("{name}", "recon")
            for uid in ("{study}", "{series}", "{instance}"):
                url = url.replace(uid, "1.2.3")
            assert "{" not in url, f"test does not know how to fill {path}"
            if path in PUBLIC:
                assert "security" not in op and method == "get"
                assert server.client().get(url).status_code in (200, 503)
                continue
            checked.add((method, path))
            assert op["security"] == [{"HTTPBearer": []}], path
            assert {"401", "403"} <= set(op["responses"]), path
            params = {"format": "png"} if path.endswith("/result") else None
            anonymous = server.client().request(method, url, params=params)
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            wrong = server.client("not-a-token").request(method, url, params=params)
            assert wrong.status_code == 401, (method, path, wrong.text)
            basic = server.client().request(method, url, params=params, headers={"Authorization": "Basic eDp5"})
            assert basic.status_code == 401, (method, path)
            lacking = server.client("read-token" if (method, path) in REVIEW_ROUTES else "review-token").request(
                method, url, params=params)
            assert lacking.status_code == 403 and "lacks" in lacking.json()["detail"], (method, path)
    assert checked >= KNOWN_PROTECTED
    # scopes are the ones documented: a read token cannot submit or cancel, and only admin reads the audit log
    with server.client("read-token") as reader:
        assert reader.get(f"/v1/jobs/{job}").status_code == 200
        assert reader.post(f"/v1/jobs/{job}/cancel").status_code == 403
        assert reader.post("/v1/jobs", files=[("file", ("x.h5", b"x"))], data={"pipeline": "ct-fbp"}).status_code \
            == 403
        assert reader.get("/v1/audit").status_code == 403
        assert reader.post(f"/v1/jobs/{job}/review", json={"decision": "approve"}).status_code == 403
        assert reader.post(f"/v1/jobs/{job}/deliveries", params={"destination": "x"}).status_code == 403


def test_audit_records_calls_and_refused_attempts(server, job, files):
    study_uid = pydicom.dcmread(files["dicom"]).StudyInstanceUID
    with server.client("read-token") as reader:
        assert reader.get(f"/v1/jobs/{job}").status_code == 200
        assert reader.get(f"/v1/jobs/{job}/result", params={"format": "png"}).status_code == 409
        assert reader.get("/v1/jobs", params={"state": "queued"}).status_code == 200
    assert server.client().get(f"/v1/jobs/{job}").status_code == 401
    assert server.client("review-token").get(f"/v1/jobs/{job}").status_code == 403
    with server.client("submit-token") as submitter:
        bad = submitter.post("/v1/jobs", files=[("file", ("x.h5", b"not hdf5"))], data={"pipeline": "ct-fbp"})
        assert bad.status_code == 415

    with server.client("admin-token") as admin:
        mine = admin.get("/v1/audit", params={"job_id": job}).json()
        everything = admin.get("/v1/audit", params={"limit": 500}).json()
    entries = {(e["action"], e["outcome"], e["actor"]): e for e in mine}
    reader, submitter = TOKEN_NAMES["read-token"], TOKEN_NAMES["submit-token"]

    submitted = entries[("job.submit", "ok", submitter)]
    assert submitted["study_uid"] == study_uid and submitted["client"] == "127.0.0.1"
    assert entries[("job.read", "ok", reader)]["study_uid"] == study_uid
    assert ("job.result", "conflict", reader) in entries
    assert entries[("job.read", "unauthenticated", "anonymous")]["client"] == "127.0.0.1"
    assert entries[("job.read", "forbidden", TOKEN_NAMES["review-token"])]["detail"].startswith("HTTP 403")
    assert all(e["job_id"] == job for e in mine)

    others = {(e["action"], e["outcome"], e["actor"]) for e in everything if e["job_id"] is None}
    assert ("job.submit", "rejected", submitter) in others  # refused before a job existed
    assert ("job.list", "ok", reader) in others
    assert ("audit.read", "ok", TOKEN_NAMES["admin-token"]) in others  # the first audit query, seen by the second
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)


def test_no_patient_data_in_the_server_log(server, job, files):
    dicom = pydicom.dcmread(files["dicom"])
    with server.client("submit-token") as client:
        stored = client.get(f"/v1/jobs/{job}").json()
        assert stored["study"]["PatientName"] == PATIENT_NAME  # the service does hold it ...
        with open(files["mri"], "rb") as raw:  # ... and a refused submission with patient data
            r = client.post("/v1/jobs", files=[("file", (f"{PATIENT_NAME}.h5", raw))],
                            data={"pipeline": "mri-zero-filled",
                                  "study": json.dumps({"PatientName": PATIENT_NAME, "StudyInstanceUID": "x"})})
        assert r.status_code == 422
    log = server.log()
    assert f"job {job} queued" in log  # the log is captured and names jobs by id
    for secret in (PATIENT_NAME, "Secretname", PATIENT_ID, str(dicom.PatientName), dicom.PatientID):
        assert secret not in log, secret
    assert not re.search(r"Traceback", log)
