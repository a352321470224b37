"""benchmarks/mri_classical.py: the --quick run (BART tuned on 2 tuning cases, both sides scored on 2 held-out
cases) writes the files BENCHMARKS.md quotes, with sane reconstructions; --markdown prints the table from them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT
from system_deps import require_tool

SCRIPT = ROOT / "benchmarks" / "mri_classical.py"
METHODS = ("ours l1-wavelet", "ours best lam", "bart tuned", "bart default", "ours cg-sense", "ours zero-filled")


def _run(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    require_tool("bart", "bart")
    tmp = tmp_path_factory.mktemp("mri_classical")
    out, tuning = tmp / "scores.json", tmp / "tuning.json"
    done = _run("--quick", "--out", str(out), "--tuning-file", str(tuning), "--oracle-cache", str(tmp / "oracle.json"))
    assert done.returncode == 0, done.stderr
    return {"out": out, "scores": json.loads(out.read_text()), "tuning": json.loads(tuning.read_text())}


def test_tuning_file_holds_the_grid_per_case_and_the_winner(quick):
    tuning = quick["tuning"]
    grid = tuning["grid"]
    assert len(tuning["cases"]) == 2 and all(name.startswith("val_") for name in tuning["cases"])
    assert all(len(row) == len(grid["R"]) * len(grid["I"]) for row in tuning["cases"].values())
    winner = tuning["winner"]
    assert winner["R"] in grid["R"] and winner["I"] in grid["I"]
    assert winner["mean_psnr"] == max(tuning["mean_psnr"].values())
    assert {"command", "machine", "threads", "versions"} <= tuning.keys() and tuning["versions"]["bart"]


def test_scores_hold_provenance_every_method_and_the_summary(quick):
    scores = quick["scores"]
    assert {"command", "machine", "threads", "versions", "bart_startup_s", "l1_wavelet_defaults"} <= scores.keys()
    assert scores["threads"] == 2 and scores["versions"]["bart"] and scores["versions"]["torch"]
    assert scores["bart_tuned"]["pics"] == quick["tuning"]["winner"]["pics"]
    assert len(scores["cases"]) == 2 and all(name.startswith("test_") for name in scores["cases"])
    for entry in scores["cases"].values():
        assert set(entry["methods"]) == set(METHODS)
        assert all({"psnr", "ssim", "nmse"} <= m.keys() for m in entry["methods"].values())
        assert all(entry["methods"][m]["seconds"] > 0 for m in METHODS if m != "ours best lam")
        assert len(entry["lam_grid"]) >= 3
    summary = scores["summary"]
    assert summary["cases"] == 2 and set(summary["mean"]) == set(METHODS)
    assert {"ours_default_ge_bart_tuned_psnr", "gap_to_best_lam_db", "within_0_5_db_of_best_lam",
            "time_ratio_ours_over_bart_tuned"} <= summary.keys()


def test_reconstructions_beat_zero_filled_and_the_oracle_is_the_best_of_its_grid(quick):
    for name, entry in quick["scores"]["cases"].items():
        m = entry["methods"]
        floor = m["ours zero-filled"]["psnr"] + 1.0
        assert m["bart tuned"]["psnr"] > floor and m["bart default"]["psnr"] > floor, name
        assert m["ours l1-wavelet"]["psnr"] > floor and m["ours cg-sense"]["psnr"] > floor, name
        assert m["ours best lam"]["psnr_raw"] == max(e["psnr_raw"] for e in entry["lam_grid"].values())
        assert m["ours l1-wavelet"]["ssim"] > m["ours zero-filled"]["ssim"]


def test_markdown_prints_the_table_from_the_file(quick):
    done = _run("--markdown", "--out", str(quick["out"]), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| BART tuned |" in done.stdout and "| ours l1-wavelet (defaults) |" in done.stdout
    assert done.stdout.count("px ") == 2 and quick["scores"]["command"] in done.stdout


def test_without_bart_it_fails_with_the_install_hint(tmp_path):
    done = _run("--quick", "--out", str(tmp_path / "s.json"), env={"PATH": "", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "bart: not found on PATH: install the Debian package bart" in done.stderr
    assert not (tmp_path / "s.json").exists()
