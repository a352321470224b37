"""Crash safety: kill -9 of the process that holds the worker pool, then recovery on the next start."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from job_inputs import finished, sirt_iterations_for, store_input, submit, wait_for, write_slow_ct

from recon_service.context import ServiceContext
from recon_service.jobs.recovery import input_intact, recover_jobs
from recon_service.jobs.store import JobState
from recon_service.jobs.worker import WorkerPool
from recon_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory) -> Path:
    return write_slow_ct(tmp_path_factory.mktemp("sources") / "chest.h5")


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, warmup=False, max_attempts=2)


def _gone(pid: int) -> bool:
    """No such process, or only a zombie left for its new parent to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECON_DATA_DIR": str(data_dir), "RECON_WARMUP": "false",
           "RECON_MAX_ATTEMPTS": "2", "RECON_DATABASE_URL": ""}
    server = subprocess.Popen([sys.executable, "-m", "recon_service.jobs.worker", "--workers", str(workers),
                               "--threads", "1"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    assert line, f"the worker server exited with {server.wait(10)}"
    return server, json.loads(line)["workers"]


def test_kill_9_of_the_server_then_recovery_accounts_for_every_job(tmp_path, ct_file):
    settings = _settings(tmp_path / "data")
    context = ServiceContext.create(settings)
    data_dir, store = settings.data_dir, context.store
    iterations = sirt_iterations_for(2.0, ct_file)
    running = submit(store, data_dir, "ct-sirt", [(ct_file, "a.h5", "sinogram")], {"iterations": iterations})
    deleted = submit(store, data_dir, "ct-fbp", [(ct_file, "b.h5", "sinogram")])   # queued behind it
    corrupt = submit(store, data_dir, "ct-fbp", [(ct_file, "c.h5", "sinogram")])
    waiting = submit(store, data_dir, "ct-fbp", [(ct_file, "d.h5", "sinogram")])

    server, workers = _start_server(data_dir, workers=1)
    try:
        wait_for(store, running.id, lambda j: j.state == JobState.RUNNING and j.progress > 0.05, timeout=60)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        deadline = time.monotonic() + 5
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(pid) for pid in workers), "workers outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
        server.stdout.close()
    time.sleep(0.3)  # nothing moves any more: the job the worker held is still marked running
    assert store.get(running.id).state == JobState.RUNNING and store.get(deleted.id).state == JobState.QUEUED

    (data_dir / deleted.inputs[0].path).unlink()
    damaged = data_dir / corrupt.inputs[0].path
    damaged.write_bytes(bytes(b ^ 0xFF for b in damaged.read_bytes()))  # same size, other content

    partial = data_dir / "results" / f".{running.id}.partial-12345"  # as a worker killed while writing leaves it
    partial.mkdir(parents=True)
    (partial / "recon.nii.gz").write_bytes(b"half")
    # and as a server killed while publishing a remote worker's files leaves it (executors.task.publish_files)
    remote = data_dir / "results" / f".{waiting.id}.partial-67890"
    remote.mkdir()
    (remote / "recon.nii.gz").write_bytes(b"half")
    outcomes = dict(recover_jobs(context))
    assert outcomes == {running.id: "queued", deleted.id: "failed", corrupt.id: "failed"}
    assert not partial.exists() and not remote.exists()
    for job in (deleted, corrupt):
        assert store.get(job.id).error == "the stored input of this queued job is missing or corrupt"
    assert store.get(waiting.id).state == JobState.QUEUED

    pool = WorkerPool(settings, 1, idle_sleep=0.05, threads=1)
    pool.start()
    try:
        for job in (running, waiting):
            ended = wait_for(store, job.id, finished, timeout=60)
            assert ended.state == JobState.SUCCEEDED, ended.error
        again = store.get(running.id)
        assert again.attempts == 2 and (data_dir / again.result["files"]["nifti"]).exists()

        # stop() with a job in progress: the worker is killed after the timeout and the job waits for recovery
        long = submit(store, data_dir, "ct-sirt", [(ct_file, "e.h5", "sinogram")], {"iterations": 5000})
        wait_for(store, long.id, lambda j: j.state == JobState.RUNNING and j.progress > 0.05, timeout=30)
    finally:
        pool.stop(timeout=0.5)
    assert pool.alive() == 0 and store.get(long.id).state == JobState.RUNNING
    assert dict(recover_jobs(context)) == {long.id: "queued"}
    store.cancel(long.id)
    counts = store.count_by_state()
    assert counts["running"] == 0 and counts["queued"] == 0
    context.engine.dispose()


def test_a_job_that_crashed_max_attempts_times_fails_with_the_reason(tmp_path, ct_file):
    context = ServiceContext.create(_settings(tmp_path / "data"))
    job = submit(context.store, context.settings.data_dir, "ct-fbp", [(ct_file, "a.h5", "sinogram")])
    assert context.store.claim_next("gone:1").id == job.id   # first run; the service dies
    assert recover_jobs(context) == [(job.id, "queued")]
    assert context.store.claim_next("gone:2").id == job.id   # second run; dies again
    assert recover_jobs(context) == [(job.id, "failed")]
    failed = context.store.get(job.id)
    assert failed.error.startswith("the service stopped during this job 2 times (limit 2)")
    assert failed.finished_at is not None and context.store.count_by_state()["running"] == 0
    assert recover_jobs(context) == []
    context.engine.dispose()


def test_input_intact_checks_place_size_and_checksum(tmp_path, ct_file):
    data_dir = tmp_path / "data"
    record = store_input(data_dir, "j1", 0, ct_file, "a.h5", "sinogram")
    assert input_intact(data_dir, record)
    path = data_dir / record.path
    path.write_bytes(path.read_bytes()[:-1])
    assert not input_intact(data_dir, record)  # truncated
    path.write_bytes(b"\0" * record.size)
    assert not input_intact(data_dir, record)  # same size, other bytes
    path.unlink()
    assert not input_intact(data_dir, record)  # gone
    outside = store_input(tmp_path / "elsewhere", "j2", 0, ct_file, "a.h5", "sinogram")
    escaped = outside.__class__(outside.filename, f"../elsewhere/{outside.path}", outside.size, outside.sha256,
                                outside.kind)
    assert (data_dir / escaped.path).exists() and not input_intact(data_dir, escaped)


def test_an_interrupted_job_whose_input_was_deleted_fails_with_the_reason(tmp_path, ct_file):
    context = ServiceContext.create(_settings(tmp_path / "data"))
    job = submit(context.store, context.settings.data_dir, "ct-fbp", [(ct_file, "a.h5", "sinogram")])
    context.store.claim_next("gone:1")
    (context.settings.data_dir / job.inputs[0].path).unlink()
    assert recover_jobs(context) == [(job.id, "failed")]
    assert context.store.get(job.id).error == ("the service stopped during this job and its stored input is "
                                               "missing or corrupt")
    context.engine.dispose()
