"""Crash safety of the real service: kill -9 of ``recon serve`` while a job runs and another waits, then restart.

Proved over real HTTP against a ``recon serve`` child process (SQLite in its data dir, one worker):

* an upload answered 202 is already on disk, complete, with the SHA-256 the job records;
* SIGKILL to the server alone takes its worker processes down with it (none keeps running old jobs);
* after a restart on the same data dir and port every job is accounted for: the interrupted one is re-queued
  and succeeds on its second attempt, the queued one succeeds, no job is left running, inputs are unchanged
  and results download.
"""

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest
from job_inputs import sirt_iterations_for, write_mri, write_slow_ct

from recon_service.client import ReconClient
from recon_service.local_server import LocalServer

ENV = {"RECON_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1", "RECON_WARMUP": "false"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (the server's worker processes and multiprocessing helpers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def wait_until(client: ReconClient, job_id: str, condition, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while not condition(status := client.job(job_id)):
        assert time.monotonic() < deadline, f"job {job_id}: {status['state']} ({status['step']}) after {timeout} s"
        time.sleep(0.05)
    return status


def submit_and_check_stored(client: ReconClient, data_dir: Path, source: Path, pipeline: str, **kw) -> dict:
    """Submit; right after the 202 the upload must be on disk, whole, under the storage contract's path."""
    accepted = client.submit([source], pipeline, **kw)
    stored = data_dir / "uploads" / accepted["id"] / f"0-{source.name}"
    assert stored.is_file() and sha256(stored) == sha256(source)
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no temp file next to it
    return accepted


def job_rows(data_dir: Path) -> dict[str, tuple[str, int]]:
    """id -> (state, attempts) straight from the SQLite job store (the server is down)."""
    with sqlite3.connect(f"file:{data_dir / 'jobs.db'}?mode=ro", uri=True) as db:
        return {i: (s, a) for i, s, a in db.execute("SELECT id, state, attempts FROM jobs")}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sources")
    return {"ct": write_slow_ct(tmp / "chest.h5"), "mri": write_mri(tmp / "brain.h5")}


def test_kill_9_while_running_then_restart_accounts_for_every_job(tmp_path, sources):
    server = LocalServer(tmp_path / "data", workers=1, env=ENV)
    data_dir = server.data_dir
    iterations = sirt_iterations_for(4.0, sources["ct"])  # ~4 s here: still running when the server dies
    server.start()
    try:
        with server.client() as client:
            long = submit_and_check_stored(client, data_dir, sources["ct"], "ct-sirt",
                                           params={"iterations": iterations}, idempotency_key="long-1")
            waiting = submit_and_check_stored(client, data_dir, sources["mri"], "mri-cg-sense",
                                              params={"max_iter": 5})
            running = wait_until(client, long["id"],
                                 lambda s: (s["step"] or "").startswith("reconstructing iteration"))
            assert running["state"] == "running" and running["attempts"] == 1
            assert client.job(waiting["id"])["state"] == "queued"  # the only worker is busy
            before = {j["id"]: j["inputs"] for j in client.jobs()}

        worker_pid = int(running["worker"].rsplit(":", 1)[1])
        spawned = children(server.pid)
        assert worker_pid in spawned and alive(worker_pid)

        server.kill()  # SIGKILL to the uvicorn process only, not its process group
        deadline = time.monotonic() + 10
        while left := {pid for pid in spawned if alive(pid)}:
            assert time.monotonic() < deadline, f"processes of the killed server still running: {left}"
            time.sleep(0.1)
        # the crash left the job store as it was: one job running (its worker gone), one queued
        assert job_rows(data_dir) == {long["id"]: ("running", 1), waiting["id"]: ("queued", 0)}

        server.start()  # same data dir, same port
        with server.client() as client:
            again = client.wait(long["id"], timeout=90)
            assert again["state"] == "succeeded" and again["attempts"] == 2, again
            assert again["worker"] != running["worker"]  # a worker of the new server ran it
            other = client.wait(waiting["id"], timeout=60)
            assert other["state"] == "succeeded" and other["attempts"] == 1, other

            jobs = client.jobs()
            assert {j["id"] for j in jobs} == {long["id"], waiting["id"]}  # none lost, none duplicated
            assert client.jobs(state="running") == [] and client.jobs(state="queued") == []
            for job in jobs:
                assert job["inputs"] == before[job["id"]]
                for record in job["inputs"]:
                    path = data_dir / "uploads" / job["id"] / f"{record['position']}-{record['filename']}"
                    assert sha256(path) == record["sha256"] and path.stat().st_size == record["size"]
                for fmt in ("dicom", "nifti", "png", "metrics"):
                    path = client.download(job["id"], fmt, tmp_path / "out" / f"{job['id']}.{fmt}")
                    assert path.stat().st_size > 0
            # the idempotency key survived the crash: the retry of the submission finds the same job
            retry = client.submit([sources["ct"]], "ct-sirt", params={"iterations": iterations},
                                  idempotency_key="long-1")
            assert retry["id"] == long["id"] and retry["state"] == "succeeded"
        assert not list((data_dir / "results").glob(".*.partial-*"))  # no half-written result folder left
        log = server.log_path.read_text()
        assert f"recovery: job {long['id']} re-queued" in log
    finally:
        server.stop()
    assert server.pid is None

