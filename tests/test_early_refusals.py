"""Refusals the service answers before it has read the upload reach clients that send the whole body first.

Python's ``urllib.request`` sends ``Connection: close`` and reads the answer only after the last byte of the
body is out; a server that answers and closes while the body is still coming makes the kernel reset the
connection, and the client sees ``ConnectionResetError`` instead of its 401/403. These tests use a real
``recon serve`` and urllib (no mocks), and check that nothing of the refused uploads is kept.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.request

import pytest
from api_server import run_server

LIMIT_MB = 30
BOUNDARY = "earlyRefusalBoundary"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("early-refusals"), max_upload_mb=str(LIMIT_MB), warmup="false",
                    run_workers="false") as srv:
        yield srv


def form(file_bytes: int, first_field: str = "pipeline") -> bytes:
    """A multipart submission: a text field, then one file part of ``file_bytes`` random bytes."""
    b = BOUNDARY.encode()
    return (b"--" + b + f'\r\nContent-Disposition: form-data; name="{first_field}"\r\n\r\nmri-zero-filled\r\n'.encode()
            + b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="scan.h5"\r\n'
            + b"Content-Type: application/octet-stream\r\n\r\n" + os.urandom(file_bytes) + b"\r\n--" + b + b"--\r\n")


def urllib_post(url: str, body: bytes, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + "/v1/jobs", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("megabytes", [4, 20])
@pytest.mark.parametrize("token, status, words", [
    (None, 401, "bearer token is required"),
    ("not-a-token", 401, "not valid"),
    ("read-token", 403, "lacks the 'jobs:submit' scope"),
])
def test_auth_refusal_of_a_large_upload_reaches_urllib(server, megabytes, token, status, words):
    body = form(megabytes << 20)
    for _ in range(4):  # the reset was intermittent: every try must get its answer
        code, answer = urllib_post(server.url, body, token)
        assert code == status, answer
        assert words in answer["detail"]
    assert server.uploads() == set()  # nothing of an unauthenticated upload is stored


def test_refusal_in_the_middle_of_the_form_reaches_urllib(server):
    """An unknown form field stops the submission before the 4 MB file part: still a readable 422."""
    body = form(4 << 20, first_field="bogus")
    for _ in range(3):
        code, answer = urllib_post(server.url, body, "submit-token")
        assert code == 422, answer
        assert "unknown form field 'bogus'" in answer["detail"]
    assert server.uploads() == set()


def test_a_body_over_the_limit_is_not_read_and_the_connection_closes(server):
    """Declared larger than the upload limit: answered at once (nothing read) with Connection: close."""
    conn = http.client.HTTPConnection("127.0.0.1", server.local.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/jobs")
        conn.putheader("Authorization", "Bearer submit-token")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        conn.putheader("Content-Length", str((LIMIT_MB + 10) << 20))
        conn.endheaders()  # and no body
        response = conn.getresponse()
        assert response.status == 413
        assert response.getheader("connection") == "close"
        assert "exceeds the limit" in json.loads(response.read())["detail"]
    finally:
        conn.close()


def test_expect_100_continue_gets_the_refusal_instead_of_continue(server):
    """A client waiting for 100 Continue is refused without being asked for the body."""
    with socket.create_connection(("127.0.0.1", server.local.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
                     b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n"
                     b"Content-Length: 20000000\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 401"), head
        assert b"connection: close" in head
