"""Schema-driven fuzzing of the live API: schemathesis sends generated requests (valid and invalid) for every
operation of the OpenAPI document to a real ``recon serve`` over HTTP on loopback.

The document is built from the app at import time, so pytest gets one test per operation (schemathesis'
fixture-based loader does not work with pytest 9); the first test checks it is the one the live server serves.

Whatever it sends, the service must not answer 5xx, must answer with a status code its OpenAPI document
lists for the operation, with the documented content type and a body that matches the documented schema.
With the admin token the requests reach the handlers; without a token every /v1 route must refuse them.
The server runs its worker: a job the fuzzing gets queued is run, and the last tests send real files with
generated parameters so that they reach the worker.
"""

import os

import pytest
import schemathesis
from api_server import run_server
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# A fixed, modest run by default (reproducible, well under a minute here); a deeper random run by hand:
# FUZZ_EXAMPLES=300 FUZZ_RANDOM=1 pytest tests/test_api_fuzz.py
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")), deadline=None, database=None,
                derandomize=os.environ.get("FUZZ_RANDOM") != "1", suppress_health_check=list(HealthCheck))
ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # small upload limit: generated bodies also probe the 413 path; no warm-up (not needed here); one worker runs
    # whatever the fuzzing gets queued, each job stopped after a few seconds at most
    with run_server(tmp_path_factory.mktemp("api-fuzz"), warmup="false", max_upload_mb="0.05", workers="1",
                    worker_threads="1", job_timeout_s="5") as srv:
        with srv.client("admin-token") as admin:  # a real job, so listings and audit entries are not empty
            r = admin.post("/v1/jobs", data={"pipeline": "ct-fbp"},
                           files=[("file", ("x.h5", _sinogram(tmp_path_factory.mktemp("in"))))])
            assert r.status_code == 202, r.text
        yield srv


def _sinogram(tmp):
    from api_server import write_sinogram_file

    return write_sinogram_file(tmp / "chest.h5").read_bytes()


def _openapi() -> dict:
    from recon_service.api import create_app
    from recon_service.settings import Settings

    return create_app(Settings(data_dir="unused", warmup=False)).openapi()


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_fuzzed_document_is_the_one_the_server_serves(server):
    with server.client() as anonymous:
        served = anonymous.get("/openapi.json")
    assert served.status_code == 200 and served.json() == OPENAPI
    operations = {(method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item}
    assert {("POST", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}/result"), ("POST", "/v1/jobs/{job_id}/cancel"),
            ("GET", "/v1/audit"), ("GET", "/readyz")} <= operations


@schema.parametrize()
@FUZZ
def test_no_server_errors_and_schema_conformance_as_admin(case, server):
    case.call_and_validate(base_url=server.url, headers=ADMIN, checks=CHECKS, timeout=30)


@schema.parametrize()
@FUZZ
def test_without_a_token_every_v1_route_refuses(case, server):
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)
    # (negative cases also try methods the route does not have: 405 for those is right)
    if case.path.startswith(("/v1/", "/dicomweb/")) and case.method.upper() == case.operation.method.upper():
        assert response.status_code == 401, (case.method, case.path, response.status_code, response.text[:200])


# ---------------------------------------------------------------- fuzzed parameters that reach the worker
# Generated bodies carry random bytes as the file, so the tests above never get a job queued. Here every
# submission carries a real tiny file of the pipeline's modality and generated parameters: values the
# declarations allow (drawn anywhere in their ranges, boundaries included), sometimes one they do not. A
# refused value is 422 at the door; an accepted job goes to the worker and must end succeeded, or failed with a
# stated reason (never "internal error"); the responses are checked against the document as above.

FUZZ_JOBS = settings(max_examples=int(os.environ.get("FUZZ_JOB_EXAMPLES", "20")), deadline=None, database=None,
                     derandomize=os.environ.get("FUZZ_RANDOM") != "1", suppress_health_check=list(HealthCheck))
JOBS_SETTLE_S = 30.0  # then what is still queued or running is cancelled (each run is stopped after 5 s anyway)


def _allowed(p):
    from hypothesis import strategies as st

    if p.choices is not None:
        values = st.sampled_from(p.choices)
        if p.type == "array":
            values = st.lists(values, min_size=1, max_size=len(p.choices), unique=True)
    elif p.type == "integer":
        values = st.integers(int(p.minimum) + p.exclusive_minimum, int(p.maximum) - p.exclusive_maximum)
    elif p.type == "number":
        values = st.floats(p.minimum, p.maximum, exclude_min=p.exclusive_minimum, exclude_max=p.exclusive_maximum,
                           allow_nan=False, allow_infinity=False)
    elif p.type == "boolean":
        values = st.booleans()
    elif p.pattern is not None:
        values = st.from_regex(p.pattern, fullmatch=True)
    else:
        raise AssertionError(f"no strategy for parameter {p.name} ({p.type})")
    return st.one_of(st.none(), values) if p.nullable else values


def _submissions():
    """(pipeline, params, the refused key or None)."""
    from hypothesis import strategies as st
    from method_params import bad_values

    from recon_service.jobs.catalog import list_pipelines

    def for_pipeline(info):
        allowed = st.fixed_dictionaries({}, optional={p.name: _allowed(p) for p in info.method.parameters})
        bad = [(p.name, value) for p in info.method.parameters for _, value in bad_values(p)]
        bad.append(("no_such_parameter", 1))
        refused = st.one_of(st.none(), st.none(), st.none(), st.sampled_from(bad))  # mostly allowed values
        return st.tuples(st.just(info), allowed, refused)

    return st.sampled_from(list_pipelines()).flatmap(for_pipeline)


def test_fuzzed_parameters_reach_the_worker_and_jobs_end_with_a_reason(server, tmp_path):
    import json
    import time

    from api_server import write_fastmri_file, write_sinogram_file
    from hypothesis import given

    from recon_service.client import FINAL

    files = {"mri": write_fastmri_file(tmp_path / "knee.h5").read_bytes(),
             "ct": write_sinogram_file(tmp_path / "chest.h5").read_bytes()}
    operation = schema["/v1/jobs"]["POST"]
    accepted: dict[str, tuple[str, dict]] = {}
    refusals: list[tuple[str, dict, str]] = []

    @FUZZ_JOBS
    @given(_submissions())
    def submit(submission):
        info, params, refused = submission
        params = dict(params)
        if refused is not None:
            params[refused[0]] = refused[1]
        body = {"file": [files[info.modality]], "pipeline": info.name, "params": json.dumps(params)}
        case = operation.Case(body=body, media_type="multipart/form-data")
        response = case.call_and_validate(base_url=server.url, headers=ADMIN, checks=CHECKS, timeout=30)
        assert response.status_code in (202, 422), (info.name, params, response.status_code, response.text[:300])
        if response.status_code == 202:
            assert refused is None, (info.name, params, "a refused value was accepted")
            accepted[response.json()["id"]] = (info.name, params)
        else:
            detail = json.dumps(response.json()["detail"])
            assert refused is None or refused[0] in detail, (info.name, params, detail)
            if refused is None:  # allowed by the declaration, refused by a check of the file or the service
                refusals.append((info.name, params, detail))

    submit()
    assert len(accepted) >= 5, f"only {len(accepted)} fuzzed jobs were queued; refusals: {refusals}"
    with server.client("admin-token") as admin:
        deadline = time.monotonic() + JOBS_SETTLE_S
        pending = set(accepted)
        while pending and time.monotonic() < deadline:
            pending = {j for j in pending if admin.get(f"/v1/jobs/{j}").json()["state"] not in FINAL}
            time.sleep(0.2)
        for job_id in pending:  # cancelling what is left is part of the test too
            assert admin.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 409)
        deadline = time.monotonic() + 20
        final = {}
        while len(final) < len(accepted):
            assert time.monotonic() < deadline, f"jobs not ended: {set(accepted) - set(final)}"
            for job_id in set(accepted) - set(final):
                job = admin.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in FINAL:
                    final[job_id] = job
            time.sleep(0.2)
    ran = {j: job for j, job in final.items() if job["state"] != "cancelled" or job["started_at"] is not None}
    assert sum(job["state"] == "succeeded" for job in final.values()) >= 3, final
    for job_id, job in final.items():
        pipeline, params = accepted[job_id]
        if job["state"] == "failed":
            assert job["error"] and not job["error"].startswith("internal error"), (pipeline, params, job["error"])
            assert "Traceback" not in job["error"], (pipeline, params, job["error"])
        if job["state"] == "succeeded":
            assert job["results"] and job["provenance"]["pipeline"] == pipeline, job
    assert len(ran) >= 5, final


def test_a_device_index_with_a_leading_zero_fails_with_a_reason(server, tmp_path):
    """Found by the fuzzing above: 'cuda:00' once matched the ``device`` pattern and then made
    ``torch.device('cuda:00')`` raise in the worker (an internal error). It must be refused with 422 or fail with
    the reason, as 'cuda:99' does (tests/test_service_e2e.py)."""
    import time

    from api_server import write_sinogram_file

    from recon_service.client import FINAL

    with server.client("admin-token") as admin:
        response = admin.post("/v1/jobs", data={"pipeline": "ct-fbp", "params": '{"device": "cuda:00"}'},
                              files=[("file", ("chest.h5", write_sinogram_file(tmp_path / "c.h5").read_bytes()))])
        if response.status_code == 422:  # refused at the door with the reason: fixed that way
            assert "device" in response.text
            return
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 30
        while (job := admin.get(f"/v1/jobs/{response.json()['id']}").json())["state"] not in FINAL:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    assert job["state"] == "failed" and job["error"].startswith("pipeline 'ct-fbp': device 'cuda:00'"), job["error"]
