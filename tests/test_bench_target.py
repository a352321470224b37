"""`make bench` from a fresh clone: the data step makes the simulated brain benchmark where it is missing, and
every benchmark script `make bench` runs starts. (The benchmarks themselves take long and are not run here.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT
from system_deps import require_tool

BENCHMARKS = ("mri_classical", "ct_operators", "mri_brain", "unrolled_latency")
# `-o .venv/.setup-done`: never reinstall the environment from a test, whatever the file times say
MAKE = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.setup-done"]



@pytest.fixture(autouse=True)
def _make_installed():
    require_tool("make", "make")


def test_bench_data_makes_only_the_missing_sets(tmp_path):
    data, equispaced = tmp_path / "brain-bench", tmp_path / "brain-equispaced"
    present = {data: ("train", "val", "val-orientation", "test", "test-orientation"), equispaced: ("test",)}
    for root, names in present.items():  # present: must be left as they are
        for name in names:
            (root / name).mkdir(parents=True)
            (root / name / "mine.txt").write_text(name)
    make = [*MAKE, "bench-data", f"BENCH_DATA={data}", f"EQUISPACED_DATA={equispaced}"]
    done = subprocess.run(make, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    made = sorted(p.name for p in (data / "test-contrast").iterdir())
    assert made and all(name.startswith("flair_axial_") and name.endswith(("_4x.h5", "_8x.h5")) for name in made)
    made = sorted(p.name for p in (equispaced / "val").iterdir())
    assert made and all(name.endswith(("_4x.h5", "_8x.h5")) and "_axial_" in name for name in made)
    for root, names in present.items():
        for name in names:
            assert [p.name for p in (root / name).iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in data.iterdir()) == ["test", "test-contrast", "test-orientation", "train", "val",
                                                       "val-orientation"]
    assert sorted(p.name for p in equispaced.iterdir()) == ["test", "val"]
    assert not (tmp_path / "brain-equispaced.partial").exists()

    again = subprocess.run(make, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "simulate" not in again.stdout + again.stderr
    assert f"benchmark data: {data}" in again.stdout and f"equispaced-mask validation set: {equispaced}/val" in \
        again.stdout


def test_bench_makes_the_data_before_the_benchmarks(tmp_path):
    data = tmp_path / "brain-bench"
    plan = subprocess.run([*MAKE, "-n", "bench", f"BENCH_DATA={data}"], capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    simulate = plan.stdout.index(f'recon simulate mri --out "{data}/.partial" --set $set')
    assert all(plan.stdout.index(f"benchmarks/{b}.py") > simulate for b in BENCHMARKS)
    assert f"benchmarks/mri_brain.py --data {data}" in plan.stdout


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_each_benchmark_starts(benchmark):
    done = subprocess.run([sys.executable, f"benchmarks/{benchmark}.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


def test_mri_brain_without_data_says_how_to_make_it(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/mri_brain.py", "--data", str(tmp_path / "none")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "make bench-data" in done.stderr and "Traceback" not in done.stderr
