"""``recon batch`` on local worker processes: listing inputs, the status file, outputs as the service writes them,
failure isolation, a killed worker, an interrupted batch resumed; the command's refusals."""

import json
import os
import signal

import numpy as np
import pytest
from batch_helpers import (
    SLOW_PARAMS,
    check_finished_batch,
    kill_a_running_worker,
    start_batch,
    status_lines,
    wait_until,
    write_batch,
)

from pipelines.io.detect import load_acquisition
from pipelines.io.nifti import read_nifti
from pipelines.pipeline import reconstruct
from recon_service.batch.inputs import BatchInputError, item_key, list_inputs
from recon_service.batch.status import StatusLog


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch-in")
    good, bad = write_batch(d, good=5)
    return d, good, bad


# --- inputs and the status file ----------------------------------------------------------------------------

def test_directory_listing_gives_stable_unique_keys(tmp_path):
    (tmp_path / "a b.h5").write_bytes(b"x")
    (tmp_path / "a_b.h5").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "scan.MRD").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an input")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.h5").write_bytes(b"x")
    items = list_inputs(tmp_path)
    keys = [i.key for i in items]
    assert [i.path.name for i in items] == ["a b.h5", "a_b.h5", "scan.MRD"]
    assert keys[2] == "sub_scan" and len(set(keys)) == 3
    assert keys[0].startswith("a_b-") and keys[1].startswith("a_b-")  # told apart by a hash of the path
    assert keys == [i.key for i in list_inputs(tmp_path)]
    assert len(item_key("x" * 200 + ".h5")) == 64


def test_manifest_lists_paths_and_per_file_params(tmp_path):
    (tmp_path / "one.h5").write_bytes(b"x")
    (tmp_path / "two.h5").write_bytes(b"x")
    manifest = tmp_path / "list.txt"
    entry = json.dumps({"path": str(tmp_path / "two.h5"), "params": {"lam": 0.1}})
    manifest.write_text(f"# inputs\none.h5\n\n{entry}\n")
    items = list_inputs(manifest)
    assert [(i.key, i.params) for i in items] == [("one", {}), ("two", {"lam": 0.1})]
    manifest.write_text("one.h5\nmissing.h5\n")
    with pytest.raises(BatchInputError, match=r"list.txt, line 2: no such file 'missing.h5'"):
        list_inputs(manifest)
    manifest.write_text("# nothing\n")
    with pytest.raises(BatchInputError, match="lists no files"):
        list_inputs(manifest)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchInputError, match="no raw-data files"):
        list_inputs(tmp_path / "empty")
    with pytest.raises(BatchInputError, match="no such directory or manifest"):
        list_inputs(tmp_path / "nowhere")


def test_status_log_skips_a_torn_line_and_needs_the_folder(tmp_path):
    log = StatusLog(tmp_path)
    log.append("a", "a.h5", "done", slices=2)
    log.append("b", "b.h5", "done", slices=2)
    with open(log.path, "a") as f:
        f.write('{"key": "c", "status": "do')  # a crash in the middle of a line
    log.append("c", "c.h5", "started")
    assert [r["key"] for r in log.records()] == ["a", "b", "c"]
    (tmp_path / "a").mkdir()
    assert set(log.finished(tmp_path)) == {"a"}  # b's folder never got there: not finished


# --- the command on local worker processes -----------------------------------------------------------------

def test_batch_writes_service_outputs_and_isolates_bad_files(batch_dir, tmp_path):
    source, good, bad = batch_dir
    out = tmp_path / "out"
    proc = start_batch(source, out, "--workers", "2")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr  # some files failed
    summary = check_finished_batch(out, good, bad)
    assert summary["executor"] == "local" and summary["workers"] == 2 and summary["slices"] == 2 * len(good)
    # the same image a direct reconstruction gives
    direct = reconstruct(load_acquisition(source / "brain_00.h5"), "cg-sense").volume.magnitude()
    written = read_nifti(out / "brain_00" / "recon.nii.gz").data
    assert written.shape == direct.shape
    assert np.allclose(written, direct, rtol=1e-4, atol=1e-5 * float(direct.max()))
    # the summary table: one row per file with its metrics, the totals, and the failures with their reasons
    assert "file" in stdout and "PSNR" in stdout
    assert f"{len(good)} done, 2 failed, 0 skipped" in stdout and "slices/s" in stdout
    assert "failed: " in stdout and "not_hdf5.h5: input 'not_hdf5.h5': not a readable HDF5 file" in stdout
    assert "pixels.h5: input 'pixels.h5': not a known raw-data layout" in stdout
    assert "file/s" in stderr or "s/file" in stderr  # the progress bar's rate


def test_killed_local_worker_has_its_file_retried(tmp_path):
    source = tmp_path / "in"
    good, _ = write_batch(source, good=4, bad=False)
    out = tmp_path / "out"
    proc = start_batch(source, out, "--workers", "2", pipeline="mri-l1-wavelet", params=SLOW_PARAMS)
    killed = kill_a_running_worker(out, proc)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    check_finished_batch(out, good, [], killed=killed)


def test_interrupted_batch_resumes_where_it_stopped(tmp_path):
    source = tmp_path / "in"
    good, _ = write_batch(source, good=5, bad=False)
    out = tmp_path / "out"
    proc = start_batch(source, out, "--workers", "1", pipeline="mri-l1-wavelet", params=SLOW_PARAMS)
    wait_until(lambda: any(r["status"] == "done" for r in status_lines(out)), 300, "a first file", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in stderr, stderr
    first = {r["key"] for r in status_lines(out) if r["status"] == "done"}
    assert first and first < set(good)
    mtimes = {key: os.stat(out / key / "recon.nii.gz").st_mtime_ns for key in first}
    # what an interrupted run can leave besides: a staging folder, and a folder published without its done line
    unfinished = sorted(set(good) - first)[0]
    (out / f".{unfinished}.partial-4321").mkdir()
    (out / unfinished).mkdir(exist_ok=True)
    proc = start_batch(source, out, "--workers", "1", pipeline="mri-l1-wavelet", params=SLOW_PARAMS)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"{len(good) - len(first)} done, 0 failed, {len(first)} skipped" in stdout
    assert f"resuming: {len(first)} file(s) finished earlier are skipped" in stderr
    summary = check_finished_batch(out, good, [])
    assert summary["done"] == len(good) - len(first) and summary["skipped"] == len(first)
    assert {key: os.stat(out / key / "recon.nii.gz").st_mtime_ns for key in first} == mtimes  # not redone


@pytest.mark.parametrize("args, message", [
    (["--pipeline", "mri-nothing"], "unknown pipeline 'mri-nothing'"),
    (["--pipeline", "mri-cg-sense", "--params", '{"max_iter": 0}'], "max_iter"),
    (["--pipeline", "mri-cg-sense", "--params", "{bad"], "--params: not valid JSON"),
    (["--pipeline", "mri-cg-sense", "--address", "127.0.0.1:1"], "--address is a Ray cluster's"),
])
def test_batch_refuses_bad_arguments_before_any_work(run_recon, batch_dir, tmp_path, args, message):
    source, _, _ = batch_dir
    proc = run_recon("batch", str(source), "--out", str(tmp_path / "out"), *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_batch_names_a_missing_input(run_recon, tmp_path):
    proc = run_recon("batch", str(tmp_path / "nowhere"), "--pipeline", "mri-cg-sense", "--out", str(tmp_path / "o"),
                     check=False)
    assert proc.returncode == 2 and f"{tmp_path / 'nowhere'}: no such directory or manifest file" in proc.stderr
