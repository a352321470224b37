"""Ray: ``recon batch --executor ray`` on a local Ray of 2 CPUs (a worker killed mid-batch, a bad file, a resumed
batch), a Ray cluster started with ``ray start`` joined by ``--address``, a GPU request it cannot place, and the
service's job workers on Ray (``RECON_EXECUTOR=ray``) with a Ray worker killed in the middle of a job."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_helpers import (
    SLOW_PARAMS,
    check_finished_batch,
    kill_a_running_worker,
    start_batch,
    status_lines,
    write_batch,
)
from job_inputs import finished, submit, wait_for

from recon_service.context import ServiceContext
from recon_service.executors.base import ExecutorError
from recon_service.executors.ray_cluster import RayExecutor
from recon_service.jobs.store import JobState
from recon_service.jobs.worker import WorkerPool
from recon_service.settings import Settings

try:
    import ray  # noqa: F401
except ImportError:  # a missing dependency fails, with the install hint, never skips
    pytest.fail("Ray is not installed: pip install -e '.[ray]' (make setup installs it)", pytrace=False)

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_worker_pids(name: str = "ray::ReconActor") -> list[int]:
    """The processes of our Ray actors (Ray names a worker process after its actor class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(name.encode()):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on this machine (``ray start``, 2 CPUs), its address. Token authentication is off here, as on a
    cluster network that only its nodes reach; clients then need no token (README: batch on Ray)."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    started = subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard",
                              "false", "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def test_ray_batch_survives_a_killed_worker_and_a_bad_file(tmp_path):
    source = tmp_path / "in"
    good, bad = write_batch(source, good=5)
    out = tmp_path / "out"
    args = ("--executor", "ray", "--workers", "2")  # no address: a local Ray with 2 CPUs
    proc = start_batch(source, out, *args, pipeline="mri-l1-wavelet", params=SLOW_PARAMS)
    killed = kill_a_running_worker(out, proc, timeout=180)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 1, stderr  # the bad files
    summary = check_finished_batch(out, good, bad, killed=killed)
    assert summary["executor"] == "ray" and summary["workers"] == 2
    assert "on 2 ray worker(s)" in stdout
    # run again: the finished files are skipped, only the bad ones are tried (and fail) again
    proc = start_batch(source, out, *args, pipeline="mri-l1-wavelet", params=SLOW_PARAMS)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 1 and f"0 done, 2 failed, {len(good)} skipped" in stdout, stdout + stderr
    lines = status_lines(out)
    assert all(sum(1 for r in lines if r["key"] == key and r["status"] == "done") == 1 for key in good)


def test_batch_joins_a_ray_cluster_by_address(cluster, tmp_path):
    source = tmp_path / "in"
    good, _ = write_batch(source, good=3, bad=False)
    out = tmp_path / "out"
    proc = start_batch(source, out, "--executor", "ray", "--workers", "2", "--address", cluster)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    check_finished_batch(out, good, [])
    # RAY_ADDRESS does the same
    out2 = tmp_path / "out2"
    proc = start_batch(source, out2, "--executor", "ray", env={"RAY_ADDRESS": cluster})
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    check_finished_batch(out2, good, [])


def test_gpu_workers_that_cannot_be_placed_are_refused_with_the_reason(cluster):
    executor = RayExecutor(1, address=cluster, gpus=1, start_timeout=5)
    with pytest.raises(ExecutorError, match=r"could not start 1 worker\(s\) with 1 CPU and 1 GPU each"):
        executor.start()


def test_unreachable_cluster_is_named(tmp_path):
    executor = RayExecutor(1, address=f"127.0.0.1:{_free_port()}")
    with pytest.raises(ExecutorError, match="cannot join the Ray cluster at 127.0.0.1"):
        executor.start()


def test_service_job_workers_run_on_ray(cluster, tmp_path):
    from job_inputs import write_brain_mri

    mri = write_brain_mri(tmp_path / "brain.h5")
    context = ServiceContext.create(Settings(data_dir=tmp_path / "data", providers="CPUExecutionProvider",
                                             warmup=False, max_attempts=2, executor="ray", ray_address=cluster))
    pool = WorkerPool(context.settings, 1, idle_sleep=0.05, progress_interval=0.1, threads=1)
    pool.start()
    try:
        deadline = time.monotonic() + 180
        while pool.ready() < 1:
            assert time.monotonic() < deadline, "the job worker's Ray actor did not start"
            time.sleep(0.2)
        # a learned job: results (with the review tool's panes) published in the data directory
        job = submit(context.store, context.settings.data_dir, "mri-rim", [(mri, "brain.h5", "fastmri")])
        done = wait_for(context.store, job.id, finished, timeout=180)
        assert done.state == JobState.SUCCEEDED, done.error
        files = done.result["files"]
        assert set(files) >= {"nifti", "png", "metrics", "dicom", "panes"}
        assert all((context.settings.data_dir / path).exists() for path in files.values())
        ran_on = done.result["provenance"]["executor_worker"]
        assert int(ran_on.rsplit(":", 1)[1]) in _ray_worker_pids() and ran_on != done.worker
        reconstructing = lambda j: j.state == JobState.RUNNING and (j.step or "").startswith("reconstructing")  # noqa: E731
        # a cancellation reaches the Ray worker: the job ends cancelled, with no results
        cancelled = submit(context.store, context.settings.data_dir, "mri-l1-wavelet",
                           [(mri, "brain.h5", "fastmri")], params=SLOW_PARAMS)
        wait_for(context.store, cancelled.id, reconstructing, timeout=120)
        context.store.cancel(cancelled.id)
        done = wait_for(context.store, cancelled.id, finished, timeout=120)
        assert done.state == JobState.CANCELLED and done.result is None, (done.state, done.error)
        assert not (context.settings.data_dir / "results" / cancelled.id).exists()
        # the Ray worker dies in the middle of a job: the job is re-queued and finishes on a new one
        slow = submit(context.store, context.settings.data_dir, "mri-l1-wavelet", [(mri, "brain.h5", "fastmri")],
                      params=SLOW_PARAMS)
        wait_for(context.store, slow.id, reconstructing, timeout=120)
        for pid in _ray_worker_pids():
            os.kill(pid, signal.SIGKILL)
        done = wait_for(context.store, slow.id, finished, timeout=240)
        assert done.state == JobState.SUCCEEDED and done.attempts == 2, (done.state, done.error, done.attempts)
        assert done.result["metrics"]["psnr"] > 20
    finally:
        pool.stop(timeout=10)
        context.engine.dispose()
