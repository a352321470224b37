"""The whole service end to end: real HTTP on loopback to a real ``recon serve`` with a worker process.

Tiny raw data (fastMRI multi-coil k-space, a parallel-beam sinogram, both with a reference image) goes in as a
client sends it; the job is polled to its end; every result format comes back over HTTP and is checked with
the tools a hospital would use (dciodvfy, nibabel, PIL). Run-time failures, cancellation and a server on
PostgreSQL go the same way.
"""

import io
import json
import time
import zipfile

import nibabel as nib
import numpy as np
import psycopg
import pydicom
import pytest
from dicom_checks import assert_no_errors
from job_inputs import sha256, sirt_iterations_for, write_brain_mri, write_ct, write_slow_ct
from PIL import Image

from pipelines.io.detect import load_acquisition
from pipelines.io.dicom_study import is_valid_uid
from pipelines.pipeline import reconstruct
from pipelines.reconstructors import default_models
from pipelines.zoo import load_card
from recon_service.client import FINAL, ApiError
from recon_service.local_server import LocalServer

STUDY = {"PatientName": "E2E^Test", "PatientID": "E2E1", "AccessionNumber": "A1"}
STUDY_UID = "1.2.826.0.1.3680043.8.498.4711"  # a study the client already has: the series must join it
SLICES, SIZE = 2, 32
MRI_SIZE = 64  # a simulated brain slab (write_brain_mri), on which the methods beat zero-filled
# one torch thread per worker, CPU ONNX Runtime: the machine is small and busy
ENV = {"RECON_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1", "RECON_PROVIDERS": "CPUExecutionProvider"}
CPU = "onnxruntime:CPUExecutionProvider"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sources")
    ct = write_ct(tmp / "chest.h5", slices=SLICES, size=SIZE)
    mri = write_brain_mri(tmp / "brain.h5", slices=SLICES, size=MRI_SIZE)
    # the baselines on the same files, for the quality bars of the jobs
    baselines = {"mri": reconstruct(load_acquisition(mri), "zero-filled").metrics,
                 "ct": reconstruct(load_acquisition(ct), "fbp").metrics}
    return {"mri": mri, "ct": ct, "ct_slow": write_slow_ct(tmp / "slow.h5"), "baselines": baselines,
            "sirt_iterations": sirt_iterations_for(1.5, ct, cap=True)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``recon serve`` with warm-up (the learned models loaded) and one worker, SQLite in its data dir."""
    with LocalServer(tmp_path_factory.mktemp("service") / "data", workers=1, env=ENV) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def run_to_end(client, path, pipeline, params=None, study=None, timeout=60.0):
    """Submit, poll to the end; returns the final status and every (state, progress) seen on the way."""
    accepted = client.submit([path], pipeline, params=params, study=study)
    assert accepted["state"] == "queued" and len(accepted["id"]) == 32
    seen = []
    final = client.wait(accepted["id"], timeout=timeout, interval=0.05,
                        on_progress=lambda s: seen.append((s["state"], s["progress"])))
    return final, seen


def wait_until(client, job_id, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition(status := client.job(job_id)):
        assert status["state"] not in FINAL, status
        assert time.monotonic() < deadline, f"job {job_id} still {status['state']} ({status['step']})"
        time.sleep(0.05)
    return status


def assert_progress_sane(seen):
    progress = [p for _, p in seen]
    assert all(0.0 <= p <= 1.0 for p in progress), progress
    assert progress == sorted(progress), f"progress went back: {progress}"
    states = [s for s, _ in seen]
    order = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
    assert [order[s] for s in states] == sorted(order[s] for s in states), states


FORMATS = {"dicom": ("application/zip", "zip"), "nifti": ("application/gzip", "nii.gz"), "png": ("image/png", "png"),
           "metrics": ("application/json", "json")}


def download_all(client, job_id, dest):
    """Every result format, saved under the name the server suggests; checks the media types."""
    files = {}
    for fmt, (media_type, ext) in FORMATS.items():
        response = client.http.get(f"/v1/jobs/{job_id}/result", params={"format": fmt})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].split(";")[0] == media_type
        name = f"{job_id}-{fmt}.{ext}"
        assert f'filename="{name}"' in response.headers["content-disposition"]
        files[fmt] = client.download(job_id, fmt, dest / name)
        assert files[fmt].read_bytes() == response.content
    return files


def read_series(zip_path):
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        names = sorted(archive.namelist())
        return names, [pydicom.dcmread(io.BytesIO(archive.read(n))) for n in names]


CASES = {
    # pipeline: (source, params, modality, learned)
    "mri-cg-sense": ("mri", {"max_iter": 10}, "MR", False),
    "mri-rim": ("mri", {}, "MR", True),
    "ct-sirt": ("ct", None, "CT", False),
}
# Quality bars, (PSNR dB, SSIM, PSNR lead over the baseline on the same file: zero-filled for MRI, FBP for CT).
# Measured: CG-SENSE (10 it) 24.97 / 0.790, RIM 25.73 / 0.871 against zero-filled 20.84 / 0.405; SIRT 33.95 /
# 0.953 at 300 iterations (the fewest sirt_iterations_for gives; more only raise it: 40.5 at 5000) against FBP
# 25.17 / 0.837. Bars: measured minus 0.5 dB and 0.03, the lead minus about 0.6 dB.
QUALITY = {"mri-cg-sense": (24.45, 0.76, 3.5), "mri-rim": (25.2, 0.84, 4.3), "ct-sirt": (33.4, 0.92, 8.0)}


@pytest.mark.parametrize("pipeline", list(CASES))
def test_job_runs_to_results_in_every_format(server, client, sources, tmp_path, pipeline):
    source, params, modality, learned = CASES[pipeline]
    if pipeline == "ct-sirt":  # long enough (~1.2-1.5 s) to be seen between 0 and 1
        params = {"iterations": sources["sirt_iterations"]}
    study = {**STUDY, "StudyInstanceUID": STUDY_UID} if pipeline == "mri-cg-sense" else STUDY
    job, seen = run_to_end(client, sources[source], pipeline, params, study)
    assert job["state"] == "succeeded", job["error"]
    assert_progress_sane(seen)
    assert job["progress"] == 1.0 and job["step"] == "done" and job["attempts"] == 1 and job["error"] is None
    host, pid = job["worker"].rsplit(":", 1)
    assert host and pid.isdigit()  # the worker process that ran it
    if pipeline == "ct-sirt":
        assert any(0.0 < p < 1.0 for s, p in seen if s == "running"), seen

    # the job's record: inputs as uploaded, provenance, metrics, the formats to download
    [stored] = job["inputs"]
    assert stored["sha256"] == sha256(sources[source]) and stored["filename"] == sources[source].name
    assert job["results"] == ["dicom", "nifti", "png", "metrics"]
    assert job["study"] == study and job["started_at"] <= job["finished_at"]
    prov = job["provenance"]
    assert prov["pipeline"] == pipeline and prov["method"] == pipeline.split("-", 1)[1]
    assert prov["seconds"] > 0 and prov["parameters"]
    if learned:
        card = load_card(default_models()["rim"])
        assert prov["model_id"] == card["id"] and prov["weights_sha256"] == card["sha256"]
        assert prov["engine_provider"] == CPU
    else:
        assert prov["model_id"] is None and prov["engine_provider"] == "torch-cpu"
    assert set(job["metrics"]) == {"psnr", "ssim", "nmse"}
    psnr_bar, ssim_bar, lead = QUALITY[pipeline]
    baseline = sources["baselines"][source]
    assert job["metrics"]["psnr"] > psnr_bar and job["metrics"]["psnr"] > baseline["psnr"] + lead, job["metrics"]
    assert ssim_bar < job["metrics"]["ssim"] <= 1 and job["metrics"]["ssim"] > baseline["ssim"], job["metrics"]
    assert 0 <= job["metrics"]["nmse"] < baseline["nmse"]
    size = MRI_SIZE if source == "mri" else SIZE

    files = download_all(client, job["id"], tmp_path)

    # DICOM: a valid series of the requested patient, new series and instance UIDs, provenance
    names, series = read_series(files["dicom"])
    assert len(series) == SLICES and all(n.endswith(".dcm") for n in names)
    with zipfile.ZipFile(files["dicom"]) as archive:
        archive.extractall(tmp_path / "series")
    assert_no_errors(sorted((tmp_path / "series").rglob("*.dcm")))
    series_uids = {ds.SeriesInstanceUID for ds in series}
    sop_uids = {ds.SOPInstanceUID for ds in series}
    assert len(series_uids) == 1 and len(sop_uids) == SLICES
    assert all(is_valid_uid(uid) for uid in series_uids | sop_uids)
    study_uids = {ds.StudyInstanceUID for ds in series}
    assert len(study_uids) == 1 and series_uids.isdisjoint(study_uids) and not sop_uids & series_uids
    if "StudyInstanceUID" in study:
        assert study_uids == {STUDY_UID}
    for ds in series:
        assert ds.Modality == modality and (ds.Rows, ds.Columns) == (size, size)
        assert ds.PatientName == STUDY["PatientName"] and ds.PatientID == STUDY["PatientID"]
        assert ds.AccessionNumber == STUDY["AccessionNumber"]
        versions = list(ds.SoftwareVersions)
        if learned:
            assert f"{prov['model_id']} sha256:{prov['weights_sha256'][:12]}" in versions, versions
            assert CPU in versions
        else:
            assert f"method {prov['method']}" in versions, versions
    assert [int(ds.InstanceNumber) for ds in sorted(series, key=lambda d: int(d.InstanceNumber))] == [1, 2]

    # NIfTI, PNG, metrics
    volume = nib.load(files["nifti"])
    assert volume.shape == (size, size, SLICES) and np.isfinite(volume.get_fdata()).all()
    assert volume.get_fdata().max() > 0
    with Image.open(files["png"]) as png:
        png.load()
        assert png.format == "PNG" and min(png.size) >= size
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["job_id"] == job["id"] and metrics["pipeline"] == pipeline
    for key in ("psnr", "ssim", "nmse"):
        assert metrics[key] == pytest.approx(job["metrics"][key])


def test_each_job_gets_its_own_series(client, sources, tmp_path):
    """Two runs of the same input and study: same patient, different series and instances."""
    uids = []
    for run in range(2):
        job, _ = run_to_end(client, sources["ct"], "ct-fbp", study=STUDY)
        assert job["state"] == "succeeded", job["error"]
        _, series = read_series(client.download(job["id"], "dicom", tmp_path / f"{run}.zip"))
        uids.append(({ds.SeriesInstanceUID for ds in series}, {ds.SOPInstanceUID for ds in series},
                     {ds.StudyInstanceUID for ds in series}))
    (series_a, sops_a, study_a), (series_b, sops_b, study_b) = uids
    assert series_a.isdisjoint(series_b) and sops_a.isdisjoint(sops_b)
    assert study_a.isdisjoint(study_b)  # no StudyInstanceUID given: each job starts a new study


def test_a_job_that_fails_at_run_time_says_why(client, sources, tmp_path):
    # accepted (a well-formed device), but only the worker can tell it has no such device
    job, seen = run_to_end(client, sources["ct"], "ct-fbp", params={"device": "cuda:99"}, study=STUDY)
    assert job["state"] == "failed" and job["finished_at"] is not None
    assert job["error"].startswith("pipeline 'ct-fbp': device 'cuda:99': this machine has "), job["error"]
    assert "Traceback" not in job["error"] and "uploads/" not in job["error"]
    assert_progress_sane(seen)
    assert job["results"] == [] and job["provenance"] is None and job["metrics"] is None
    for fmt in ("dicom", "nifti"):
        with pytest.raises(ApiError) as err:
            client.download(job["id"], fmt, tmp_path / fmt)
        assert err.value.status_code == 409 and "failed" in str(err.value.detail)
    assert job["id"] in {j["id"] for j in client.jobs(state="failed")}


def test_cancel_a_running_job(server, client, sources):
    job_id = client.submit([sources["ct_slow"]], "ct-sirt", params={"iterations": 5000}, study=STUDY)["id"]
    running = wait_until(client, job_id, lambda s: (s["step"] or "").startswith("reconstructing iteration"))
    assert running["state"] == "running", running
    assert 0.05 <= running["progress"] < 0.9
    asked = client.cancel(job_id)
    assert asked["state"] == "running" and asked["cancel_requested"]
    ended = client.wait(job_id, timeout=20, interval=0.05)
    assert ended["state"] == "cancelled" and ended["step"] == "cancelled" and ended["error"] is None
    assert ended["results"] == [] and ended["finished_at"] is not None
    assert not (server.data_dir / "results" / job_id).exists()
    with pytest.raises(ApiError) as err:
        client.cancel(job_id)
    assert err.value.status_code == 409
    # the worker is free again: the next job runs
    job, _ = run_to_end(client, sources["ct"], "ct-fbp")
    assert job["state"] == "succeeded"


def test_the_service_on_postgresql(postgres_server, sources, tmp_path):
    """The same flow with the job store in PostgreSQL (a fresh database; no SQLite file is made)."""
    url = postgres_server.create_database()
    env = {**ENV, "RECON_DATABASE_URL": url, "RECON_WARMUP": "false"}
    with LocalServer(tmp_path / "data", workers=1, env=env) as srv, srv.client() as client:
        job, seen = run_to_end(client, sources["mri"], "mri-cg-sense", {"max_iter": 5}, STUDY)
        assert job["state"] == "succeeded", job["error"]
        assert_progress_sane(seen)
        _, series = read_series(client.download(job["id"], "dicom", tmp_path / "series.zip"))
        assert [ds.PatientID for ds in series] == ["E2E1"] * SLICES
        nifti = client.download(job["id"], "nifti", tmp_path / "recon.nii.gz")
        assert nib.load(nifti).shape == (MRI_SIZE, MRI_SIZE, SLICES)
        failed, _ = run_to_end(client, sources["ct"], "ct-fbp", params={"device": "cuda:99"})
        assert failed["state"] == "failed" and "device 'cuda:99'" in failed["error"]
    assert not (tmp_path / "data" / "jobs.db").exists()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = dict(conn.execute("SELECT id, state FROM jobs").fetchall())
        actions = {a for (a,) in conn.execute("SELECT DISTINCT action FROM audit_events")}
    assert rows == {job["id"]: "succeeded", failed["id"]: "failed"}
    assert {"job.submit", "job.read", "job.result"} <= actions
