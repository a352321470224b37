"""Inputs and checks shared by the batch tests (local processes and Ray)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
from conftest import recon_command
from job_inputs import write_brain_mri

# outputs of one file, as the service writes a job's results (recon_service.jobs.results.FILES)
SERVICE_FILES = {"recon.nii.gz", "preview.png", "metrics.json", "series.zip"}
# slow enough (a few seconds a file on one thread) that a worker can be killed in the middle of one
SLOW_PARAMS = {"max_iter": 2000, "maps": "acs"}


def write_batch(directory: Path, good: int, bad: bool = True) -> tuple[list[str], list[str]]:
    """``good`` small brain files (copies of one, 64 x 64, 2 slices, with reference) in ``directory`` (two in a
    subfolder), plus, with ``bad``, a file that is not HDF5 and one with an unknown layout. Returns the keys of
    the good and the bad files."""
    directory.mkdir(parents=True, exist_ok=True)
    first = write_brain_mri(directory / "brain_00.h5")
    keys = ["brain_00"]
    for i in range(1, good):
        where = directory / ("sub" if i % 3 == 0 else "") / f"brain_{i:02d}.h5"
        where.parent.mkdir(exist_ok=True)
        shutil.copyfile(first, where)
        keys.append(f"sub_brain_{i:02d}" if i % 3 == 0 else f"brain_{i:02d}")
    bad_keys = []
    if bad:
        (directory / "not_hdf5.h5").write_bytes(b"this is not an HDF5 file\n" * 10)
        with h5py.File(directory / "pixels.h5", "w") as f:
            f.create_dataset("pixels", data=np.zeros((4, 4)))
        bad_keys = ["not_hdf5", "pixels"]
    return keys, bad_keys


def start_batch(source: Path, out: Path, *extra: str, pipeline: str = "mri-cg-sense",
                params: dict | None = None, env: dict | None = None) -> subprocess.Popen:
    args = [*recon_command(), "batch", str(source), "--pipeline", pipeline, "--out", str(out), *extra]
    if params:
        args += ["--params", json.dumps(params)]
    # Ctrl-C as a terminal sends it: the batch must not inherit an ignored SIGINT (a shell's background job does),
    # or Python never turns it into KeyboardInterrupt
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def status_lines(out: Path) -> list[dict]:
    path = out / "status.jsonl"
    if not path.exists():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # being written
    return lines


def wait_until(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the batch ended (exit {proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_a_running_worker(out: Path, proc: subprocess.Popen, timeout: float = 120) -> str:
    """SIGKILL the worker of the first file that has started and not ended; returns that file's key."""

    def running():
        lines = status_lines(out)
        ended = {r["key"] for r in lines if r["status"] in ("done", "failed")}
        started = [r for r in lines if r["status"] == "started" and r["key"] not in ended
                   and r["key"].startswith("brain")]
        return started[0] if started else None

    record = wait_until(running, timeout, "a file to start", proc)
    os.kill(int(record["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    return record["key"]


def check_finished_batch(out: Path, good: list[str], bad: list[str], killed: str | None = None) -> dict:
    """Every good file done exactly once with the service's outputs, every bad one failed with a reason, nothing
    else in ``out``; the killed file (when given) retried after its worker died. Returns the summary."""
    lines = status_lines(out)
    for key in good:
        done = [r for r in lines if r["key"] == key and r["status"] == "done"]
        assert len(done) == 1, (key, [r for r in lines if r["key"] == key])
        folder = out / key
        assert SERVICE_FILES <= {p.name for p in folder.iterdir()}, sorted(folder.iterdir())
        assert len(list((folder / "dicom").glob("*.dcm"))) == 2
        assert done[0]["slices"] == 2 and done[0]["metrics"]["psnr"] > 20
    for key in bad:
        failed = [r for r in lines if r["key"] == key and r["status"] == "failed"]
        assert len(failed) == 1 and failed[0]["reason"].startswith("input '"), failed
        assert not (out / key).exists()
    if killed is not None:
        mine = [r["status"] for r in lines if r["key"] == killed]
        assert mine[:2] == ["started", "retry"] and mine[-1] == "done", mine
        retry = next(r for r in lines if r["key"] == killed and r["status"] == "retry")
        assert "died" in retry["reason"] and retry["attempt"] == 1, retry
        assert next(r for r in lines if r["key"] == killed and r["status"] == "done")["attempt"] == 2
    folders = {p.name for p in out.iterdir() if p.is_dir()}
    assert folders == set(good), folders  # no output of a failed file, no staging folder left
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"] + summary["skipped"], summary["failed"]) == (len(good), len(bad)), summary
    return summary
