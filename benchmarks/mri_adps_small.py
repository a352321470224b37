"""A-DPS with priors trained at 64 x 64: does the uncertainty rise on the contrast the priors never saw, does it
track the error, and does the ambient prior match the fully sampled one?

    recon simulate mri --out data/brain-64 --set train --size 64    # also --set test, --set test-contrast
    recon train diffusion-prior --out runs/prior64-full --data data/brain-64/train --steps 20000 --seed 0 \\
        --threads 1 --config '{"size": 64, "batch_size": 8, "checkpoint_every": 200, "val_every": 1000, \\
        "time_limit_s": 3300}'
    recon train ambient-prior --out runs/prior64-ambient --data data/brain-64/train --acceleration 4 \\
        --steps 5959 --seed 0 --threads 1 --config '{"size": 64, "batch_size": 8, "checkpoint_every": 200, \\
        "val_every": 1000, "time_limit_s": 4800}'        # stopped and resumed (--resume) once
    RECON_ZOO_DIR=benchmarks/out/zoo-64 recon zoo ship runs/prior64-full --id mri-prior-full-brain-sim64
    RECON_ZOO_DIR=benchmarks/out/zoo-64 recon zoo ship runs/prior64-ambient --id mri-prior-ambient-brain-sim64
    RECON_ZOO_DIR=benchmarks/out/zoo-64 OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/mri_adps_small.py

A diagnostic for issue #16, never shipped: the 128 x 128 priors are far from converged after the CPU hours they
got; at 64 x 64 (the same template and FOV, 3.75 mm pixels) an hour of one CPU thread trains a prior further.
Both priors here get the same steps and batch. Each runs the service's A-DPS (fast mode, ONNX Runtime, at the
method's defaults: 50 steps, 4 draws, gamma 1) on every slice of the held-out ``test`` set (axial slabs of the test
split, T1/T2/PD, contrasts the priors trained on) and of ``test-contrast`` (FLAIR on the same slabs, a contrast no
prior saw), at 4x and 8x; L1-wavelet at its defaults beside. Per file: fastMRI PSNR/SSIM/NMSE of magnitudes
against the noise-free reference; the report's uncertainty mean (the draws' std over the object, relative to the
image scale); over the head's pixels, Spearman's rank correlation of the std with |error| and the coverage of the
+-2 std interval (``mri_adps.uncertainty_figures``), averaged over the slices. Nothing is tuned here. Writes
``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.mri_adps import uncertainty_figures
from pipelines.evaluate import dataset_files
from pipelines.io.fastmri import read_fastmri
from pipelines.metrics import evaluate_volume
from pipelines.pipeline import reconstruct
from pipelines.zoo import ZOO_DIR, load_card

PRIORS = ("mri-prior-full-brain-sim64", "mri-prior-ambient-brain-sim64")
SETS = ("test", "test-contrast")


def adps_row(acq: Any, model_id: str, samples: int) -> dict[str, Any]:
    start = time.perf_counter()
    volume = reconstruct(acq, "adps", {"model_id": model_id, "engine": "onnx", "mode": "fast",
                                       "samples": samples}).volume
    seconds = time.perf_counter() - start
    image = np.abs(volume.data)
    figures = [uncertainty_figures(acq.reference[s], image[s], volume.uncertainty[s]) for s in range(len(image))]
    return {**evaluate_volume(acq.reference, image), "seconds": seconds,
            "uncertainty_mean": volume.attrs["consistency_report"]["uncertainty"]["mean"],
            **{k: statistics.fmean(f[k] for f in figures) for k in figures[0]}}


def summary_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the files of each (set, acceleration) group, per method."""
    groups: dict[str, dict[str, list[dict[str, float]]]] = {}
    for row in rows:
        by_method = groups.setdefault(f"{row['set']} {row['acceleration']}", {})
        for name, figures in row.items():
            if isinstance(figures, dict):
                by_method.setdefault(name, []).append(figures)
    return {group: {name: {k: statistics.fmean(f[k] for f in runs) for k in runs[0]} for name, runs in by.items()}
            for group, by in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/brain-64")
    parser.add_argument("--priors", default=",".join(PRIORS))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/mri_adps_small.json")
    args = parser.parse_args()
    priors = args.priors.split(",")
    cards = {model_id: load_card(model_id) for model_id in priors}
    rows = []
    for name in SETS:
        for path in dataset_files(Path(args.data) / name):
            acq = read_fastmri(path)
            l1 = np.abs(reconstruct(acq, "l1-wavelet", {}).volume.data)
            row: dict[str, Any] = {"set": name, "file": path.name, "acceleration": path.stem.rsplit("_", 1)[1],
                                   "l1-wavelet": evaluate_volume(acq.reference, l1)}
            for model_id in priors:
                row[model_id] = adps_row(acq, model_id, args.samples)
            rows.append(row)
            print(name, path.name, {k: round(v["psnr"], 2) for k, v in row.items() if isinstance(v, dict)},
                  {k: round(100 * row[k]["uncertainty_mean"], 2) for k in priors}, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": f"RECON_ZOO_DIR={os.environ.get('RECON_ZOO_DIR', ZOO_DIR)} "
                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} PYTHONPATH=. python "
                   + shlex.join(["benchmarks/mri_adps_small.py", *sys.argv[1:]]),
        "data": args.data, "samples": args.samples,
        "priors": {m: {"sha256": c["sha256"], "command": c["training"].get("command"),
                       "steps": c["training"].get("steps"), "seconds": c["training"].get("seconds"),
                       "validation": c["training"].get("validation"), "denoising": c.get("metrics")}
                   for m, c in cards.items()},
        "summary": summary_of(rows), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
