"""The learned methods' data-consistency step on the validation split (never on held-out files): its cost and gain.

    make bench-data
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_consistency_tune.py [--data data/brain-bench/val]

For every validation file and shipped network, the network image of each slice is computed once, then the
consistency step (``pipelines.learned.DataConsistency``) runs on it with each ``threshold`` of the grid, the exact
projection and none. Scored by volume PSNR/SSIM of the magnitude against the RSS reference, mean over files, per
acceleration and overall. The methods' default (``pipelines.methods._learned.CONSISTENCY_THRESHOLD`` = 1) is not
picked here: it is where the MAP weight crosses 1 (a band is corrected where the network's error power exceeds
the data's noise power), the largest threshold that returns fully sampled inputs within their noise level
(tests/test_learned_consistency.py). This run states what it costs and gains on in-distribution data.
Results: results/mri_consistency_tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from pipelines.evaluate import dataset_files
from pipelines.learned import DataConsistency, reconstruct_variants
from pipelines.methods._mri import acquisition_noise
from pipelines.metrics import psnr, ssim
from pipelines.pipeline import load
from pipelines.sampling import acquisition_mask
from pipelines.zoo import load_model

GRID = (0.5, 1.0, 2.0, 4.0, 8.0)


def settings(thresholds: tuple[float, ...]) -> dict[str, float | None | str]:
    return {"off": "off", "exact": None, **{f"{t:g}": t for t in thresholds}}


def score_file(model: torch.nn.Module, path: Path, thresholds: tuple[float, ...]) -> dict[str, dict[str, float]]:
    acq = load(path)
    mask, num_low = acquisition_mask(acq)
    sigma = acquisition_noise(acq, mask)["sigma"]
    steps = {}
    for name, threshold in settings(thresholds).items():
        mode = "off" if threshold == "off" else "exact" if threshold is None else "noise-weighted"
        steps[name] = DataConsistency(sigma, mode, threshold if mode == "noise-weighted" else 0.0)
    volumes = reconstruct_variants(model, acq, mask, num_low, steps)
    return {name: {"psnr": psnr(acq.reference, np.abs(v)), "ssim": ssim(acq.reference, np.abs(v))}
            for name, v in volumes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/brain-bench/val")
    parser.add_argument("--models", default="recurrentvarnet-brain-sim,rim-brain-sim")
    parser.add_argument("--thresholds", default=",".join(f"{t:g}" for t in GRID))
    parser.add_argument("--out", default="benchmarks/results/mri_consistency_tune.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    thresholds = tuple(float(t) for t in args.thresholds.split(","))
    files = dataset_files(args.data)
    rows: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for model_id in args.models.split(","):
        model, card = load_model(model_id)
        model.eval()
        rows[model_id] = {f.name: score_file(model, f, thresholds) for f in files}
        print(f"{model_id}: {len(files)} files", flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for model_id, per_file in rows.items():
        summary[model_id] = {}
        for name in settings(thresholds):
            entry = {}
            for acc in ("4x", "8x", ""):
                picked = [v[name] for f, v in per_file.items() if acc in f]
                key = acc or "all"
                entry[f"psnr_{key}"] = statistics.fmean(p["psnr"] for p in picked)
                entry[f"ssim_{key}"] = statistics.fmean(p["ssim"] for p in picked)
            summary[model_id][name] = entry
    print("| model | setting | PSNR 4x | PSNR 8x | PSNR all | SSIM all |\n|---|---|---|---|---|---|")
    for model_id, entries in summary.items():
        for name, e in entries.items():
            print(f"| {model_id} | {name} | {e['psnr_4x']:.2f} | {e['psnr_8x']:.2f} | {e['psnr_all']:.2f} | "
                  f"{e['ssim_all']:.4f} |")
    from pipelines.methods._learned import CONSISTENCY_THRESHOLD

    default = f"{CONSISTENCY_THRESHOLD:g}"
    for model_id, entries in summary.items():
        if default in entries:
            gain = entries[default]["psnr_all"] - entries["off"]["psnr_all"]
            cost = entries[default]["ssim_all"] - entries["off"]["ssim_all"]
            print(f"{model_id}: the default threshold {default} changes PSNR by {gain:+.2f} dB, SSIM by {cost:+.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_consistency_tune.py",
        "data": args.data, "files": [f.name for f in files], "thresholds": list(thresholds),
        "summary": summary, "per_file": rows, "default_threshold": CONSISTENCY_THRESHOLD}, indent=1))


if __name__ == "__main__":
    main()
