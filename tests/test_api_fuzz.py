"""Schema-driven fuzzing of the live API: schemathesis sends generated requests (valid and invalid) for every
operation of the OpenAPI document to a real ``recon serve`` over HTTP on loopback.

The document is built from the app at import time, so pytest gets one test per operation (schemathesis'
fixture-based loader does not work with pytest 9); the first test checks it is the one the live server serves.

Whatever it sends, the service must not answer 5xx, must answer with a status code its OpenAPI document
lists for the operation, with the documented content type and a body that matches the documented schema.
With the admin token the requests reach the handlers; without a token every /v1 route must refuse them.
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
    # small upload limit: generated bodies also probe the 413 path; no warm-up, it is not needed here
    with run_server(tmp_path_factory.mktemp("api-fuzz"), warmup="false", max_upload_mb="0.05",
                    run_workers="false") as srv:
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
    if case.path.startswith("/v1/") and case.method.upper() == case.operation.method.upper():
        assert response.status_code == 401, (case.method, case.path, response.status_code, response.text[:200])
