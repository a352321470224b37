"""Upload handling over real HTTP: size limits, content checks, hostile file names, bad form fields.

Every refused submission must leave nothing under DATA_DIR/uploads.
"""

import json

import pytest
from api_server import copy_dicom, run_server, write_fastmri_file, write_sinogram_file, write_unknown_hdf5

LIMIT_MB = 0.25


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("api-uploads"), max_upload_mb=str(LIMIT_MB), warmup="false",
                    run_workers="false") as srv:
        yield srv


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    return {"mri": write_fastmri_file(tmp / "knee.h5"), "mri2": write_fastmri_file(tmp / "knee2.h5", seed=1),
            "ct": write_sinogram_file(tmp / "sino.h5"), "unknown": write_unknown_hdf5(tmp / "images.h5"),
            "dicom": copy_dicom(tmp / "study.dcm")}


@pytest.fixture(scope="module")
def client(server):
    with server.client("submit-token") as c:
        yield c


def post(client, parts, **data):
    """``parts``: list of (client file name, bytes)."""
    return client.post("/v1/jobs", files=[("file", (name, content)) for name, content in parts], data=data)


def refused(server, client, status, words, parts, **data):
    """The submission is answered with ``status``, the detail contains every word, nothing stays on disk."""
    before = server.uploads()
    r = post(client, parts, **data)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    for word in words:
        assert word in detail, detail
    assert server.uploads() == before
    return detail


def raw_post(client, disposition_name: bytes | None, content: bytes, pipeline=b"mri-zero-filled"):
    """A hand-written multipart body, so the file name reaches the server byte for byte (no client escaping);
    ``disposition_name=None`` sends no file part."""
    boundary = b"xXxBoundaryxXx"
    body = b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"pipeline\"\r\n\r\n" + pipeline + b"\r\n"
    if disposition_name is not None:
        body += (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
                 + disposition_name + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + b"\r\n")
    body += b"--" + boundary + b"--\r\n"
    return client.post("/v1/jobs", content=body,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"})


def stored_file(server, client, response):
    assert response.status_code == 202, response.text
    job = client.get(response.headers["location"]).json()
    [entry] = job["inputs"]
    job_dir = server.data_dir / "uploads" / job["id"]
    path = job_dir / f"0-{entry['filename']}"
    assert path.resolve().is_relative_to(job_dir.resolve()) and path.is_file()
    assert [p.name for p in job_dir.iterdir()] == [path.name]
    return entry["filename"], path


@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "passwd"),
    ("/abs", "abs"),
    ("a/../../b", "b"),
    ("..", "upload"),
    ("", "upload"),
    ("ünïcödé scan.h5", "_n_c_d__scan.h5"),
    ("x" * 300 + ".h5", "x" * 97 + ".h5"),
    ("name\x00with-nul.h5", "name_00with-nul.h5"),  # the client sends NUL as %00
])
def test_hostile_names_are_stored_safely_inside_the_data_dir(server, client, files, name, expected):
    data = files["mri"].read_bytes()
    filename, path = stored_file(server, client, post(client, [(name, data)], pipeline="mri-zero-filled"))
    assert filename == expected
    assert path.read_bytes() == data
    assert not (server.data_dir.parent / "etc").exists()


@pytest.mark.parametrize("raw_name, expected", [
    (b"..\\..\\windows\\win.ini", "win.ini"),
    (b"evil\x00.h5", "evil_.h5"),
    (b"C:\\abs\\..\\scan.h5", "scan.h5"),
    (b"\xff\xfe.h5", "__.h5"),
    (b"....//....//x", "x"),
])
def test_raw_hostile_names_are_stored_safely(server, client, files, raw_name, expected):
    filename, path = stored_file(server, client, raw_post(client, raw_name, files["mri"].read_bytes()))
    assert filename == expected


def test_too_large_uploads_are_refused_with_413_and_removed(server, client, files):
    limit = int(LIMIT_MB * 2**20)
    # over the limit while streaming (the second part crosses it after the first was stored)
    refused(server, client, 413, ["exceed", "0.25 MiB"],
            [("knee.h5", files["mri"].read_bytes()), ("big.h5", b"\0" * limit)], pipeline="mri-zero-filled")
    # declared far over the limit: refused before reading
    refused(server, client, 413, ["exceeds the limit"], [("huge.h5", b"\0" * (limit + 2**21))],
            pipeline="mri-zero-filled")


def test_content_checks_refuse_bad_files(server, client, files):
    mri, ct = files["mri"].read_bytes(), files["ct"].read_bytes()
    refused(server, client, 422, ["file part 1", "images.h5", "not a known raw-data layout", "images"],
            [("images.h5", files["unknown"].read_bytes())], pipeline="mri-zero-filled")
    refused(server, client, 415, ["file part 2", "notes.txt", "neither an HDF5"],
            [("knee.h5", mri), ("notes.txt", b"patient notes")], pipeline="mri-zero-filled")
    refused(server, client, 422, ["2 raw-data files", "file part 1", "file part 2", "exactly one"],
            [("a.h5", mri), ("b.h5", files["mri2"].read_bytes())], pipeline="mri-cg-sense")
    refused(server, client, 422, ["file part 1", "CT sinogram", "mri-cg-sense", "fastMRI"],
            [("sino.h5", ct)], pipeline="mri-cg-sense")
    refused(server, client, 422, ["fastMRI k-space", "ct-fbp"], [("knee.h5", mri)], pipeline="ct-fbp")
    refused(server, client, 422, ["no raw-data file", "DICOM"], [("s.dcm", files["dicom"].read_bytes())],
            pipeline="mri-zero-filled")
    # an HDF5 file with the fastMRI layout that its reader cannot use
    refused(server, client, 422, ["file part 1"], [("trunc.h5", mri[:2048])], pipeline="mri-zero-filled")


def test_bad_form_fields_are_refused(server, client, files):
    parts = [("knee.h5", files["mri"].read_bytes())]
    refused(server, client, 422, ["'pipeline' is required"], parts)
    refused(server, client, 422, ["unknown pipeline 'mri-magic'", "mri-cg-sense"], parts, pipeline="mri-magic")
    refused(server, client, 422, ["'params' is not valid JSON"], parts, pipeline="mri-cg-sense", params="{lam: 1")
    refused(server, client, 422, ["'params' must be a JSON object"], parts, pipeline="mri-cg-sense", params="[1]")
    refused(server, client, 422, ["unknown parameters 'alpha', 'beta'; cg-sense takes: maps, lam"], parts,
            pipeline="mri-cg-sense", params=json.dumps({"alpha": 1, "beta": 2, "lam": 0.1}))
    refused(server, client, 422, ["'study' is not valid JSON"], parts, pipeline="mri-cg-sense", study="nope")
    refused(server, client, 422, ["'study' must be a JSON object"], parts, pipeline="mri-cg-sense", study='"x"')
    refused(server, client, 422, ["study field 'PatientName'"], parts, pipeline="mri-cg-sense",
            study=json.dumps({"PatientName": {"nested": 1}}))
    refused(server, client, 422, ["StudyInstanceUID", "not a DICOM UID"], parts, pipeline="mri-cg-sense",
            study=json.dumps({"StudyInstanceUID": "1.2.abc"}))
    refused(server, client, 422, ["unknown form field 'extra'"], parts, pipeline="mri-cg-sense", extra="1")
    before = server.uploads()
    r = raw_post(client, None, b"")
    assert r.status_code == 422 and "no file parts" in r.json()["detail"]
    r = client.post("/v1/jobs", json={"pipeline": "mri-cg-sense"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/jobs", content=b"--b\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400 and "multipart" in r.json()["detail"], r.text
    assert server.uploads() == before


def test_dicom_files_supply_the_study_under_the_request_study(server, client, files):
    import pydicom

    dicom = pydicom.dcmread(files["dicom"])
    r = post(client, [("knee.h5", files["mri"].read_bytes()), ("study.dcm", files["dicom"].read_bytes())],
             pipeline="mri-cg-sense", params=json.dumps({"lam": 0.01}),
             study=json.dumps({"PatientName": "Override^Name", "AccessionNumber": "A123"}))
    assert r.status_code == 202, r.text
    job = client.get(r.headers["location"]).json()
    assert [i["kind"] for i in job["inputs"]] == ["fastmri", "dicom"]
    assert job["study"]["StudyInstanceUID"] == dicom.StudyInstanceUID
    assert job["study"]["PatientID"] == dicom.PatientID
    assert job["study"]["PatientName"] == "Override^Name" and job["study"]["AccessionNumber"] == "A123"
    assert job["params"] == {"lam": 0.01}

    other = pydicom.dcmread(files["dicom"])
    other.StudyInstanceUID = "1.2.3.4"
    other_path = files["dicom"].with_name("other.dcm")
    other.save_as(other_path)
    refused(server, client, 422, ["StudyInstanceUID differs", "one patient and study"],
            [("knee.h5", files["mri"].read_bytes()), ("a.dcm", files["dicom"].read_bytes()),
             ("b.dcm", other_path.read_bytes())], pipeline="mri-cg-sense")
