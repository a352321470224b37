"""Benchmark results files (benchmarks/README.md, rule 8): each committed file names the command that wrote it, and
the CT operator and training-step benchmarks write single-slice and batched timings apart, at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, recon_command

RESULTS = ("mri_brain", "ct_operators", "service_load", "unrolled_train_step", "validation_before_after",
           "mri_consistency_tune", "mri_ood_calibrate", "mri_consistency",
           "unrolled_latency", "ct_ood_calibrate", "ct_ood_heldout_slab", "ct_dds_chest_prior", "dds_warm_start",
           "mri_flair_oracle", "mri_adps_small")


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"benchmarks/{script}.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "", "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("name", RESULTS)
def test_committed_results_file_names_its_command(name):
    result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
    assert f"benchmarks/{name}.py" in result["command"]


def test_dds_default_start_is_the_one_the_tuning_slab_chose():
    """The method's default warm start is what benchmarks/dds_warm_start.py's rule picks from its committed rows
    (tuning slab only), and the rows cover every start of its grid at every case."""
    code = ("import json; from benchmarks.dds_warm_start import STARTS, STEPS, choose; "
            "from pipelines.methods.dds import WARM_START; "
            "rows = json.load(open('benchmarks/results/dds_warm_start.json'))['rows']; "
            "print(json.dumps({'starts': STARTS, 'steps': STEPS, 'choice': choose(rows), 'default': WARM_START}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    rule = json.loads(done.stdout.strip().splitlines()[-1])
    result = json.loads((ROOT / "benchmarks" / "results" / "dds_warm_start.json").read_text())
    assert "brain-tuning" in result["data"] and len(result["rows"]) == 4
    for rows in result["rows"].values():
        assert sorted(r["start"] for r in rows if r["steps"] == rule["steps"]) == sorted(rule["starts"])
    chosen, worst = rule["choice"]
    assert chosen == result["chosen_start"] == rule["default"] and worst == result["largest_shortfall_db"]


def test_ct_operators_times_single_and_batched_apart_with_the_build_outside(tmp_path):
    out = tmp_path / "ct.json"
    done = _run("ct_operators", "--size", "31", "--views", "12", "--pair-views", "4", "--batch", "3",
                "--repeats", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert "--size 31 --views 12 --pair-views 4 --batch 3 --repeats 1" in result["command"]
    assert [b["views"] for b in result["matrix_build"]] == [12, 4] and all(b["nnz"] > 0 for b in
                                                                            result["matrix_build"])
    timing = result["timing"]
    for operation, views in (("projector", 12), ("fbp", 12), ("forward+adjoint", 4)):
        for slices in (1, 3):
            rows = {r["tool"]: r for r in timing if r["operation"] == operation and r["slices"] == slices}
            assert {"ours", "scikit-image"} <= set(rows) and all(r["views"] == views for r in rows.values())
            assert rows["ours"]["ratio_vs_ours"] == 1.0
    assert {r["tool"] for r in result["accuracy"]} >= {"ours", "scikit-image"}


def test_unrolled_train_step_says_which_weights(tmp_path):
    out = tmp_path / "step.json"
    done = _run("unrolled_train_step", "--only", "rim-T8-h48-gru", "rim-T8-h64-indrnn", "--coils", "2", "--size",
                "16", "16", "--repeats", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = {r["config"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["rim-T8-h48-gru"]["weights"].startswith("shipped rim-brain-sim, sha256 ")
    assert rows["rim-T8-h64-indrnn"]["weights"] == "random (seed 0)"


def test_ood_calibration_refuses_an_unknown_calibration_set():
    done = _run("mri_ood_calibrate", "--calibration-sets", "val,test", "--models", "rim-brain-sim")
    assert done.returncode == 2 and "--calibration-sets: unknown test; choose from val, val-orientation" in done.stderr


def test_ct_flag_margin_and_thresholds_are_what_the_committed_rows_give():
    """The CT prior's card holds the margin that benchmarks/ct_ood_calibrate.py's leave-one-slab-out rule picks from
    its committed rows (validation slabs only), and the thresholds those rows give at that margin."""
    code = ("import json; from benchmarks.ct_ood_calibrate import choose_margin, thresholds_from, pooled, "
            "FALSE_FLAG_AIM; r = json.load(open('benchmarks/results/ct_ood_calibrate.json')); "
            "card = json.load(open('models/zoo/ct-prior-brain-sim/card.json')); "
            "pixel = tuple(card['ood']['thresholds']['pixel_mm']); "
            "m, search = choose_margin(r['rows'], r['calibration_slabs'], pixel); "
            "print(json.dumps({'margin': m, 'rate': pooled(search[m]), 'aim': FALSE_FLAG_AIM, "
            "'smaller': [pooled(c) for k, c in search.items() if k < m], "
            "'thresholds': thresholds_from(r['rows'], r['calibration_slabs'], m, pixel).to_dict()}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    rule = json.loads(done.stdout.strip().splitlines()[-1])
    card = json.loads((ROOT / "models" / "zoo" / "ct-prior-brain-sim" / "card.json").read_text())
    assert card["ood"]["margin"] == rule["margin"] and card["ood"]["thresholds"] == rule["thresholds"]
    assert rule["rate"] <= rule["aim"] and all(rate > rule["aim"] for rate in rule["smaller"])


def test_ct_ood_calibration_refuses_an_unknown_calibration_slab():
    done = _run("ct_ood_calibrate", "--calibration-slabs", "brain-tuning,brain-test")
    assert done.returncode == 2
    assert ("--calibration-slabs: unknown brain-test; choose from brain-tuning, brain-gap-low, brain-gap-high"
            in done.stderr)


def test_flair_oracle_scores_both_networks_and_l1_wavelet_on_the_same_files(tmp_path):
    """benchmarks/mri_flair_oracle.py at a tiny size, the shipped weights given as the oracle's: both networks score
    the same on every file, L1-wavelet is scored beside them, and the summary is the rows' mean per acceleration."""
    data = tmp_path / "flair"
    for r in ("4", "8"):
        done = subprocess.run([*recon_command(), "simulate", "mri", "--out", str(data),
                               "--split", "test", "--contrast", "flair", "--acceleration", r, "--size", "64",
                               "--slices", "1", "--coils", "4", "--max-files", "1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={"PYTHONPATH": str(ROOT), "PATH": "", "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
    out = tmp_path / "oracle.json"
    done = _run("mri_flair_oracle", "--weights", "models/zoo/recurrentvarnet-brain-randomized/model.pt",
                "--data", str(data), "--val", str(data), "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    base, oracle = result["base"]["model_id"], "oracle (fine-tuned on FLAIR)"
    assert result["oracle"]["sha256"] == result["base"]["sha256"] and len(result["rows"]) == 2
    assert result["base"]["on_flair_val"]["psnr"] == pytest.approx(
        sum(row[base]["psnr"] for row in result["rows"]) / 2)
    for row in result["rows"]:
        assert row[oracle] == row[base] and row["l1-wavelet"]["psnr"] != row[base]["psnr"]
    assert sorted(result["summary"]) == ["4x", "8x"]
    for r, summary in result["summary"].items():
        (row,) = [row for row in result["rows"] if row["file"].endswith(f"_{r}.h5")]
        assert summary[base]["psnr"] == row[base]["psnr"]
        assert summary[base]["gain_over_l1_db"] == row[base]["psnr"] - row["l1-wavelet"]["psnr"]


def test_flair_oracle_summary_is_what_its_rows_give():
    result = json.loads((ROOT / "benchmarks" / "results" / "mri_flair_oracle.json").read_text())
    for r, summary in result["summary"].items():
        rows = [row for row in result["rows"] if row["file"].endswith(f"_{r}.h5")]
        assert len(rows) == 2
        for name, figures in summary.items():
            assert figures["psnr"] == pytest.approx(sum(row[name]["psnr"] for row in rows) / 2, abs=1e-9)


def test_small_priors_summary_is_what_its_rows_give():
    """results/mri_adps_small.json: each (set, acceleration) summary is the mean of its files' figures, for
    L1-wavelet and both 64 x 64 priors, over the T1/T2/PD test files and the FLAIR ones."""
    result = json.loads((ROOT / "benchmarks" / "results" / "mri_adps_small.json").read_text())
    assert sorted(result["summary"]) == ["test 4x", "test 8x", "test-contrast 4x", "test-contrast 8x"]
    for group, summary in result["summary"].items():
        name, r = group.split()
        rows = [row for row in result["rows"] if row["set"] == name and row["acceleration"] == r]
        assert len(rows) == (2 if name == "test-contrast" else 6)
        assert sorted(summary) == sorted(["l1-wavelet", *result["priors"]])
        for method, figures in summary.items():
            for key, value in figures.items():
                assert value == pytest.approx(sum(row[method][key] for row in rows) / len(rows), abs=1e-12)
