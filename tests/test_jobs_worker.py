"""The job runner in-process, and a real WorkerPool (spawned processes, SQLite store, files on disk)."""

import contextlib
import io
import json
import logging
import os
import signal
import socket
import time
import zipfile

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_checks import assert_no_errors
from job_inputs import (
    finished,
    sirt_iterations_for,
    store_input,
    submit,
    wait_for,
    write_brain_mri,
    write_ct,
    write_slow_ct,
)
from PIL import Image

from pipelines.io.detect import load_acquisition
from pipelines.pipeline import reconstruct
from pipelines.reconstructors import default_models
from pipelines.zoo import load_card
from recon_service.context import ServiceContext
from recon_service.jobs.runner import JobCancelled, JobFailed, run_job
from recon_service.jobs.store import JobState
from recon_service.jobs.warmup import WarmUpError, warm_up
from recon_service.jobs.worker import ProgressReporter, WorkerPool
from recon_service.settings import Settings

CPU = "onnxruntime:CPUExecutionProvider"
# Quality bars: the PSNR (dB) measured on this module's inputs minus 0.5 dB (the inputs are seeded and the
# methods deterministic; the tolerance covers other BLAS/CPU builds). MRI: write_brain_mri (64 x 64, 4 coils, 4x;
# zero-filled 20.84, CG-SENSE 24.94, RIM 25.73); CT: write_ct (32 x 32, 24 views, noiseless; FBP 25.17).
PSNR_BARS = {"mri-zero-filled": 20.3, "mri-cg-sense": 24.4, "mri-rim": 25.2, "ct-fbp": 24.6}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Raw-data files as a client would send them (outside the data directory)."""
    d = tmp_path_factory.mktemp("sources")
    mri = write_brain_mri(d / "brain.h5")
    broken = d / "mystery.h5"
    with h5py.File(broken, "w") as f:
        f.create_dataset("pixels", data=np.zeros((4, 4)))
    cut = d / "cut.h5"
    cut.write_bytes(mri.read_bytes()[:5000])
    return {"mri": mri, "ct": write_ct(d / "chest.h5"), "ct_noref": write_ct(d / "noref.h5", reference=False),
            "ct_slow": write_slow_ct(d / "slow.h5"),
            "mystery": broken, "cut": cut}


def _context(data_dir) -> ServiceContext:
    return ServiceContext.create(Settings(data_dir=data_dir, providers="CPUExecutionProvider", warmup=False,
                                          max_attempts=2))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The store and data directory the pool serves."""
    context = _context(tmp_path_factory.mktemp("data"))
    yield context
    context.engine.dispose()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A store and data directory for jobs run in this process (no pool takes them)."""
    context = _context(tmp_path_factory.mktemp("local"))
    yield context
    context.engine.dispose()


@pytest.fixture(scope="module")
def pool(service):
    pool = WorkerPool(service.settings, 2, idle_sleep=0.05, progress_interval=0.1, threads=1)
    pool.start()
    yield pool
    pool.stop(timeout=10)
    assert pool.alive() == 0


# --- the runner in this process ----------------------------------------------------------------------------

def test_run_job_reports_progress_and_writes_results(local, sources, single_thread):
    job = submit(local.store, local.settings.data_dir, "mri-cg-sense", [(sources["mri"], "brain.h5", "fastmri")],
                 study={"PatientName": "Test^Patient", "AccessionNumber": "ACC1"})
    seen = []
    result = run_job(local.settings, job, lambda fraction, step: seen.append((fraction, step)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions == sorted(fractions) and fractions[-1] == pytest.approx(0.9)
    steps = [s for _, s in seen]
    assert steps[0] == "loading input" and "reconstructing slice 2/2" in steps and steps[-1] == "writing results"
    files = result["files"]
    assert files == {fmt: f"results/{job.id}/{name}" for fmt, name in
                     [("nifti", "recon.nii.gz"), ("png", "preview.png"), ("metrics", "metrics.json"),
                      ("dicom", "series.zip")]}
    with zipfile.ZipFile(local.settings.data_dir / files["dicom"]) as series:
        names = series.namelist()
        first = pydicom.dcmread(io.BytesIO(series.read(names[0])))
    assert len(names) == 2  # one instance per slice
    assert first.Modality == "MR" and first.ImageType[:2] == ["ORIGINAL", "PRIMARY"]
    assert first.PatientName == "Test^Patient" and first.AccessionNumber == "ACC1"
    assert any("cg-sense" in v for v in first.SoftwareVersions)
    prov = result["provenance"]
    assert prov["pipeline"] == "mri-cg-sense" and prov["method"] == "cg-sense" and prov["model_id"] is None
    assert prov["engine_provider"] == "torch-cpu" and prov["parameters"]["maps"] == "espirit"
    # lam left out: chosen from the noise measured in the k-space, reported beside the parameters as given
    chosen = prov["chosen_parameters"]
    assert prov["parameters"]["lam"] is None and chosen["lam"] > 0 and chosen["noise"]["sigma"] > 0
    assert chosen["noise"]["source"].startswith("k-space") and "sigma/s" in chosen["rule"]
    assert f"lam={chosen['lam']:g}" in first.DerivationDescription  # the DICOM says the weight as run
    assert prov["seconds"] >= prov["reconstruction_seconds"] > 0
    # measured 24.94 dB / SSIM 0.795 (noise-adaptive defaults) against zero-filled 20.84 / 0.405 on the same file
    zero_filled = reconstruct(load_acquisition(sources["mri"]), "zero-filled").metrics
    assert result["metrics"]["psnr"] > PSNR_BARS["mri-cg-sense"]
    assert result["metrics"]["psnr"] > zero_filled["psnr"] + 3.0
    assert result["metrics"]["ssim"] > zero_filled["ssim"] + 0.3
    json.dumps(result, allow_nan=False)  # storable as JSON in SQLite and PostgreSQL


def test_learned_method_uses_onnx_with_the_configured_providers(local, sources, single_thread):
    job = submit(local.store, local.settings.data_dir, "mri-rim", [(sources["mri"], "brain.h5", "fastmri")])
    result = run_job(local.settings, job, lambda *_: None)
    prov = result["provenance"]
    card = load_card(default_models()["rim"])
    assert prov["model_id"] == card["id"] and prov["weights_sha256"] == card["sha256"]
    assert prov["engine_provider"] == CPU
    assert prov["parameters"]["engine"] == "onnx" and prov["parameters"]["providers"] == ["CPUExecutionProvider"]
    # measured 25.73 dB / SSIM 0.871 (CG-SENSE 24.94 / 0.795, zero-filled 20.84 / 0.405)
    assert result["metrics"]["psnr"] > PSNR_BARS["mri-rim"] and result["metrics"]["ssim"] > 0.84


def test_run_job_refuses_inputs_outside_the_data_dir(local, sources, tmp_path):
    data_dir = local.settings.data_dir
    escaped = store_input(tmp_path, "x", 0, sources["mri"], "brain.h5", "fastmri")  # outside DATA_DIR
    bad = escaped.__class__(escaped.filename, os.path.relpath(tmp_path / escaped.path, data_dir), escaped.size,
                            escaped.sha256, escaped.kind)
    assert bad.path.startswith("..") and (data_dir / bad.path).exists()
    job, _ = local.store.create("mri-zero-filled", [bad], "tester")
    with pytest.raises(JobFailed, match="input 'brain.h5': its stored path is outside the data directory"):
        run_job(local.settings, job, lambda *_: None)
    link = data_dir / "uploads" / "link.h5"  # a symlink inside that leads outside
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path / escaped.path)
    linked = bad.__class__("link.h5", "uploads/link.h5", bad.size, bad.sha256, "fastmri")
    job, _ = local.store.create("mri-zero-filled", [linked], "tester")
    with pytest.raises(JobFailed, match="outside the data directory"):
        run_job(local.settings, job, lambda *_: None)


def test_run_job_input_problems_name_the_client_file(local, sources):
    data_dir = local.settings.data_dir
    wrong = submit(local.store, data_dir, "mri-zero-filled", [(sources["ct"], "scan.h5", "fastmri")])
    with pytest.raises(JobFailed, match="input 'scan.h5': holds CT data, pipeline 'mri-zero-filled' reconstructs MRI"):
        run_job(local.settings, wrong, lambda *_: None)
    two = submit(local.store, data_dir, "ct-fbp", [(sources["ct"], "a.h5", "sinogram"),
                                                    (sources["ct"], "b.h5", "sinogram")])
    with pytest.raises(JobFailed, match="takes exactly one raw-data file .* 'a.h5', 'b.h5'"):
        run_job(local.settings, two, lambda *_: None)
    gone = submit(local.store, data_dir, "ct-fbp", [(sources["ct"], "lost.h5", "sinogram")])
    (data_dir / gone.inputs[0].path).unlink()
    with pytest.raises(JobFailed) as err:
        run_job(local.settings, gone, lambda *_: None)
    assert err.value.reason == "input 'lost.h5': file not found"


def test_unexpected_error_gives_type_and_logs_traceback_without_names(tmp_path, sources, caplog):
    settings = Settings(data_dir=tmp_path / "data", warmup=False)
    context = ServiceContext.create(settings)
    (settings.data_dir / "results").write_text("a file where the results folder should be")
    job = submit(context.store, settings.data_dir, "ct-fbp", [(sources["ct"], "Doe^John.h5", "sinogram")])
    with caplog.at_level(logging.ERROR, logger="recon_service.jobs.runner"):
        with pytest.raises(JobFailed) as err:
            run_job(context.settings, job, lambda *_: None)
    assert err.value.reason.startswith("internal error while writing results (")
    assert "Error)" in err.value.reason and job.id in err.value.reason and "Traceback" not in err.value.reason
    logged = caplog.text
    assert "Traceback" in logged and "write_results" in logged and job.id in logged
    assert "Doe^John" not in logged and str(settings.data_dir.resolve()) not in logged
    context.engine.dispose()


def test_progress_writes_are_throttled_and_cancel_is_seen(tmp_path, sources):
    service = _context(tmp_path)
    job = submit(service.store, service.settings.data_dir, "ct-sirt", [(sources["ct"], "c.h5", "sinogram")])
    service.store.claim_next("test:1")
    reporter = ProgressReporter(service.store, job.id, interval=0.2)
    for i in range(5000):
        reporter(0.05 + 0.8 * i / 5000, f"reconstructing iteration {i + 1}/5000")
    assert 1 <= reporter.writes <= 10  # 5000 calls in well under two seconds
    reporter(0.9, "writing results")  # a new stage is written at once
    assert service.store.get(job.id).step == "writing results"
    service.store.cancel(job.id)
    reporter.last_write = float("-inf")
    with pytest.raises(JobCancelled):
        reporter(0.95, "writing results")
    with pytest.raises(JobCancelled):  # and stays cancelled without asking the store again
        reporter(0.96, "writing results")
    service.store.finish(job.id, JobState.CANCELLED)
    service.engine.dispose()


def test_warm_up_runs_every_default_model(tmp_path):
    providers = warm_up(Settings(data_dir=tmp_path, providers="CPUExecutionProvider"))
    assert providers == {model_id: CPU for model_id in default_models().values()}
    with pytest.raises(WarmUpError, match="failed to load or run"):
        warm_up(Settings(data_dir=tmp_path, providers="NoSuchExecutionProvider,Bogus"))


def test_worker_threads_come_from_the_argument_the_setting_or_the_cores(tmp_path):
    assert WorkerPool(Settings(data_dir=tmp_path, worker_threads=3), 2).options.threads == 3
    assert WorkerPool(Settings(data_dir=tmp_path, worker_threads=3), 2, threads=1).options.threads == 1
    assert WorkerPool(Settings(data_dir=tmp_path), 2).options.threads == max(1, (os.cpu_count() or 1) // 2)


# --- a real pool ---------------------------------------------------------------------------------------------

def test_pool_runs_mri_and_ct_jobs_to_results(service, pool, sources):
    data_dir = service.settings.data_dir
    deadline = time.monotonic() + 60
    while pool.ready() < 2:  # /readyz waits for this: workers started and warmed up
        assert time.monotonic() < deadline, f"{pool.ready()} of 2 workers ready after 60 s"
        time.sleep(0.1)
    jobs = {name: submit(service.store, data_dir, name, [(sources[src], f"{src}.h5", kind)])
            for name, src, kind in [("mri-zero-filled", "mri", "fastmri"), ("mri-cg-sense", "mri", "fastmri"),
                                    ("ct-fbp", "ct", "sinogram")]}
    noref = submit(service.store, data_dir, "ct-fbp", [(sources["ct_noref"], "noref.h5", "sinogram")])
    done = {name: wait_for(service.store, job.id, finished, timeout=60) for name, job in jobs.items()}
    host = socket.gethostname()
    for name, job in done.items():
        assert job.state == JobState.SUCCEEDED, (name, job.error)
        assert job.progress == 1.0 and job.step == "done" and job.attempts == 1
        assert job.worker.startswith(f"{host}:") and int(job.worker.split(":")[1]) in pool.pids()
        files = {fmt: data_dir / path for fmt, path in job.result["files"].items()}
        volume = nib.load(files["nifti"]).get_fdata()
        size = 64 if name.startswith("mri-") else 32
        assert volume.shape == (size, size, 2) and np.isfinite(volume).all() and volume.max() > 0
        with Image.open(files["png"]) as png:
            assert png.mode == "L" and png.size[0] >= 32
        metrics = json.loads(files["metrics"].read_text())
        assert metrics["pipeline"] == name and metrics["job_id"] == job.id and metrics["psnr"] > PSNR_BARS[name]
        assert job.result["metrics"]["ssim"] == pytest.approx(metrics["ssim"])
        assert job.result["provenance"]["pipeline"] == name
        series = sorted((data_dir / "results" / job.id / "dicom").glob("*.dcm"))
        with zipfile.ZipFile(files["dicom"]) as archive:
            assert sorted(archive.namelist()) == [p.name for p in series] and len(series) == 2
        assert_no_errors(series)  # dciodvfy: MR and CT Image Storage alike
        ds = pydicom.dcmread(series[0])
        assert ds.Modality == ("CT" if name.startswith("ct-") else "MR") and ds.StudyInstanceUID
        assert len(ds.StudyDate) == 8 and ds.StudyTime  # a study made by the service is dated
    # the same input: CG-SENSE beats zero-filled (measured +3.5 dB, SSIM 0.767 vs 0.405)
    sense, zero_filled = done["mri-cg-sense"].result["metrics"], done["mri-zero-filled"].result["metrics"]
    assert sense["psnr"] > zero_filled["psnr"] + 3.0 and sense["ssim"] > zero_filled["ssim"] + 0.3
    plain = wait_for(service.store, noref.id, finished, timeout=60)
    assert plain.state == JobState.SUCCEEDED and set(plain.result["files"]) == {"nifti", "png", "dicom"}
    assert not (data_dir / "results" / noref.id / "metrics.json").exists() and plain.result["metrics"] is None


def test_pool_fails_broken_inputs_with_a_readable_reason(service, pool, sources):
    data_dir = service.settings.data_dir
    cases = [
        ("mri-zero-filled", "mystery", "fastmri", {}, "input 'mystery.h5': not a known raw-data layout"),
        ("mri-cg-sense", "cut", "fastmri", {}, "input 'cut.h5': not a readable HDF5 file"),
        ("ct-fbp", "ct", "sinogram", {"filter": "ramp", "bogus": 1}, "pipeline 'ct-fbp': unknown parameter 'bogus'"),
    ]
    jobs = [(submit(service.store, data_dir, pipe, [(sources[src], f"{src}.h5", kind)], params), expected)
            for pipe, src, kind, params, expected in cases]
    for job, expected in jobs:
        ended = wait_for(service.store, job.id, finished, timeout=60)
        assert ended.state == JobState.FAILED and ended.error.startswith(expected), ended.error
        assert str(data_dir) not in ended.error and "uploads/" not in ended.error and "Traceback" not in ended.error
        assert not (data_dir / "results" / job.id).exists()


def test_cancel_stops_a_running_job(service, pool, sources):
    data_dir = service.settings.data_dir
    job = submit(service.store, data_dir, "ct-sirt", [(sources["ct_slow"], "chest.h5", "sinogram")],
                 {"iterations": 5000})
    running = wait_for(service.store, job.id, lambda j: (j.step or "").startswith("reconstructing iteration"),
                       timeout=60)
    assert running.state == JobState.RUNNING and 0.05 < running.progress < 0.9
    service.store.cancel(job.id)
    ended = wait_for(service.store, job.id, finished, timeout=10)
    assert ended.state == JobState.CANCELLED and ended.step == "cancelled" and ended.error is None
    assert not (data_dir / "results" / job.id).exists()
    after = submit(service.store, data_dir, "ct-fbp", [(sources["ct"], "chest.h5", "sinogram")])
    assert wait_for(service.store, after.id, finished, timeout=30).state == JobState.SUCCEEDED


def test_pool_replaces_a_killed_worker_and_requeues_its_job(service, pool, sources):
    iterations = sirt_iterations_for(3.0, sources["ct_slow"])
    job = submit(service.store, service.settings.data_dir, "ct-sirt", [(sources["ct_slow"], "chest.h5", "sinogram")],
                 {"iterations": iterations})
    running = wait_for(service.store, job.id, lambda j: j.state == JobState.RUNNING and j.progress > 0.05,
                       timeout=60)
    victim = int(running.worker.split(":")[1])
    os.kill(victim, signal.SIGKILL)  # as the kernel's OOM killer would
    second = wait_for(service.store, job.id, lambda j: j.attempts == 2, timeout=30)
    assert second.worker != running.worker
    ended = wait_for(service.store, job.id, finished, timeout=60)
    assert ended.state == JobState.SUCCEEDED and ended.attempts == 2
    assert victim not in pool.pids()
    wait_for(service.store, job.id, lambda _: pool.alive() == 2, timeout=30)


def test_pool_kills_a_hung_worker_and_settles_its_job(tmp_path, sources):
    context = ServiceContext.create(Settings(data_dir=tmp_path, providers="CPUExecutionProvider", warmup=False,
                                             max_attempts=1, job_stall_s=3.0))
    hung_pool = WorkerPool(context.settings, 1, idle_sleep=0.05, progress_interval=0.1, threads=1)
    hung_pool.start()
    try:
        first = submit(context.store, tmp_path, "ct-fbp", [(sources["ct"], "chest.h5", "sinogram")])
        assert wait_for(context.store, first.id, finished, timeout=60).state == JobState.SUCCEEDED  # imports done
        job = submit(context.store, tmp_path, "ct-sirt", [(sources["ct_slow"], "chest.h5", "sinogram")],
                     {"iterations": sirt_iterations_for(10.0, sources["ct_slow"])})
        running = wait_for(context.store, job.id, lambda j: j.state == JobState.RUNNING and j.progress > 0.05,
                           timeout=60)
        victim = int(running.worker.split(":")[1])
        os.kill(victim, signal.SIGSTOP)  # alive but making no progress, as a deadlocked worker
        ended = wait_for(context.store, job.id, finished, timeout=30)
        assert ended.state == JobState.FAILED and "hung (no progress for 3 s)" in ended.error
        wait_for(context.store, job.id, lambda _: hung_pool.alive() == 1 and victim not in hung_pool.pids(),
                 timeout=30)
        after = submit(context.store, tmp_path, "ct-fbp", [(sources["ct"], "chest.h5", "sinogram")])
        assert wait_for(context.store, after.id, finished, timeout=60).state == JobState.SUCCEEDED
    finally:
        hung_pool.stop(timeout=10)
        context.engine.dispose()


def test_a_hung_workers_job_is_requeued_and_succeeds_on_the_replacement(tmp_path, sources, caplog):
    """max_attempts=2: the hung worker is killed, its job queued again, run by the new worker to the end."""
    context = ServiceContext.create(Settings(data_dir=tmp_path, providers="CPUExecutionProvider", warmup=False,
                                             max_attempts=2, job_stall_s=3.0))
    requeue_pool = WorkerPool(context.settings, 1, idle_sleep=0.05, progress_interval=0.1, threads=1)
    requeue_pool.start()
    victim = None
    try:
        first = submit(context.store, tmp_path, "ct-fbp", [(sources["ct"], "chest.h5", "sinogram")])
        assert wait_for(context.store, first.id, finished, timeout=60).state == JobState.SUCCEEDED  # imports done
        job = submit(context.store, tmp_path, "ct-sirt", [(sources["ct_slow"], "chest.h5", "sinogram")],
                     {"iterations": sirt_iterations_for(3.0, sources["ct_slow"])})
        running = wait_for(context.store, job.id, lambda j: j.state == JobState.RUNNING and j.progress > 0.05,
                           timeout=60)
        assert running.attempts == 1
        victim = int(running.worker.split(":")[1])
        with caplog.at_level(logging.WARNING, logger="recon_service.jobs.worker"):
            os.kill(victim, signal.SIGSTOP)  # alive but making no progress, as a deadlocked worker
            second = wait_for(context.store, job.id, lambda j: j.attempts == 2 or finished(j), timeout=30)
            assert second.attempts == 2 and second.state in (JobState.QUEUED, JobState.RUNNING), second
            ended = wait_for(context.store, job.id, finished, timeout=60)
        assert ended.state == JobState.SUCCEEDED and ended.attempts == 2 and ended.error is None, ended
        assert ended.worker != running.worker and int(ended.worker.split(":")[1]) in requeue_pool.pids()
        assert (tmp_path / ended.result["files"]["nifti"]).exists()
        assert victim not in requeue_pool.pids() and requeue_pool.alive() == 1
        assert f"job {job.id}: no progress for 3 s; killing its hung worker (pid {victim})" in caplog.text
        assert f"job {job.id} of the dead worker: queued" in caplog.text
    finally:
        if victim in requeue_pool.pids():  # the test failed before the pool killed it: let it stop normally
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        requeue_pool.stop(timeout=10)
        context.engine.dispose()


def test_a_job_past_its_time_limit_fails_with_the_reason_and_the_next_job_runs(tmp_path, sources):
    # a job that reports progress all along (so the stall watchdog never fires) but runs past its pipeline's limit
    context = ServiceContext.create(Settings(data_dir=tmp_path, providers="CPUExecutionProvider", warmup=False,
                                             job_timeout_s=600, job_timeouts={"ct-sirt": 3}))
    limited_pool = WorkerPool(context.settings, 1, idle_sleep=0.05, progress_interval=0.1, threads=1)
    limited_pool.start()
    try:
        first = submit(context.store, tmp_path, "ct-fbp", [(sources["ct"], "chest.h5", "sinogram")])
        assert wait_for(context.store, first.id, finished, timeout=60).state == JobState.SUCCEEDED  # imports done
        job = submit(context.store, tmp_path, "ct-sirt", [(sources["ct_slow"], "slow.h5", "sinogram")],
                     {"iterations": sirt_iterations_for(30.0, sources["ct_slow"], cap=True)})
        running = wait_for(context.store, job.id, lambda j: j.state == JobState.RUNNING, timeout=60)
        victim = int(running.worker.split(":")[1])
        ended = wait_for(context.store, job.id, finished, timeout=30)
        assert ended.state == JobState.FAILED, ended
        assert ended.error.startswith("the job ran past its time limit of 3 s (RECON_JOB_TIMEOUTS) and was stopped")
        assert 3 <= (ended.finished_at - ended.started_at).total_seconds() < 10 and ended.attempts == 1
        wait_for(context.store, job.id, lambda _: limited_pool.alive() == 1 and victim not in limited_pool.pids(),
                 timeout=30)
        after = submit(context.store, tmp_path, "ct-fbp", [(sources["ct"], "chest.h5", "sinogram")])
        assert wait_for(context.store, after.id, finished, timeout=60).state == JobState.SUCCEEDED
        assert context.store.get(job.id).state == JobState.FAILED  # not re-queued by the worker's replacement
    finally:
        limited_pool.stop(timeout=10)
        context.engine.dispose()


def test_time_limits_come_from_the_environment_and_name_unknown_pipelines(monkeypatch):
    monkeypatch.setenv("RECON_JOB_TIMEOUT_S", "120")
    monkeypatch.setenv("RECON_JOB_TIMEOUTS", '{"ct-sirt": 30}')
    settings = Settings()
    assert settings.job_timeout_for("ct-sirt") == 30 and settings.job_timeout_for("ct-fbp") == 120
    monkeypatch.setenv("RECON_JOB_TIMEOUTS", '{"ct-sirtt": 30}')
    with pytest.raises(ValueError, match="unknown pipeline 'ct-sirtt'; known: ct-admm-tv"):
        Settings()
