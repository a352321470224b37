"""Ambient-diffusion MRI on held-out brain slices: A-DPS with the ambient and the fully sampled prior, the fast
mode, against L1-wavelet, RecurrentVarNet and RIM; and whether the uncertainty map tracks the error.

    PYTHONPATH=. python benchmarks/mri_adps.py [--slices 4] [--samples 4]

Data: the simulated brain benchmark's ``test`` set (axial slabs of subjects never trained on, T1/T2/PD, 8 coils,
128 x 128) at 4x and 8x: ``--slices`` slices per acceleration, taken one per file in file order (the slab's
second slice). Every method reconstructs from k-space with its declared defaults, except A-DPS's one
data-consistency setting per mode (``step_size`` exact, ``gamma`` fast), chosen on the validation set by
benchmarks/mri_adps_tune.py (``--tuned``; nothing was tuned on these files); the A-DPS rows differ otherwise only in
``model_id``/``mode``/``engine``. Quality: fastMRI PSNR, SSIM and NMSE of
magnitudes against the noise-free RSS reference, mean over the slices; seconds per slice (wall clock, 2 shared
CPU cores). Uncertainty (A-DPS rows): over the pixels of the head (reference above 5% of its maximum), Spearman's
rank correlation between the per-pixel standard deviation of the samples and the absolute error of their mean,
and the fraction of pixels whose error lies within two standard deviations (coverage of the +-2 sigma interval).
Writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.evaluate import dataset_files
from pipelines.io.fastmri import read_fastmri
from pipelines.metrics import nmse, psnr, ssim
from pipelines.pipeline import reconstruct

ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("adps, ambient prior", "adps", {"model_id": "mri-prior-ambient-brain-sim", "mode": "adps"}),
    ("adps, fully sampled prior", "adps", {"model_id": "mri-prior-full-brain-sim", "mode": "adps"}),
    ("adps fast, ambient prior (torch)", "adps", {"model_id": "mri-prior-ambient-brain-sim", "mode": "fast",
                                                  "engine": "torch"}),
    ("adps fast, ambient prior (onnx)", "adps", {"model_id": "mri-prior-ambient-brain-sim", "mode": "fast",
                                                 "engine": "onnx"}),
    ("adps fast, fully sampled prior (onnx)", "adps", {"model_id": "mri-prior-full-brain-sim", "mode": "fast",
                                                       "engine": "onnx"}),
    ("l1-wavelet", "l1-wavelet", {}),
    ("recurrentvarnet", "recurrentvarnet", {}),
    ("rim", "rim", {}),
]
HEAD_FRACTION = 0.05


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def uncertainty_figures(ref: np.ndarray, image: np.ndarray, std: np.ndarray) -> dict[str, float]:
    head = ref > HEAD_FRACTION * ref.max()
    err = np.abs(image - ref)[head]
    s = std[head]
    return {"spearman_std_vs_abs_error": spearman(s, err), "coverage_2sigma": float(np.mean(err <= 2 * s)),
            "mean_std_over_mean_abs_error": float(s.mean() / max(err.mean(), 1e-30))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/brain-bench/test")
    ap.add_argument("--slices", type=int, default=4, help="slices per acceleration")
    ap.add_argument("--samples", type=int, default=4, help="A-DPS draws per slice (mean = image, std = map)")
    ap.add_argument("--rows", default="all", help="comma-separated row indices (default all); the other rows are "
                    "kept from --json when it holds the same data and samples")
    ap.add_argument("--json", default="benchmarks/results/mri_adps.json")
    ap.add_argument("--tuned", default="benchmarks/results/mri_adps_tuning.json",
                    help="the settings mri_adps_tune.py chose on the validation set ('none': the defaults)")
    args = ap.parse_args()
    rows = ROWS if args.rows == "all" else [ROWS[int(i)] for i in args.rows.split(",")]
    tuned = {} if args.tuned == "none" else json.loads(Path(args.tuned).read_text())["rows"]
    rows = [(label, method, {**params, **tuned.get(label.replace(" (torch)", "").replace(" (onnx)", ""), {})
                             .get("chosen", {})}) for label, method, params in rows]
    out: dict[str, Any] = {
        "benchmark": "mri_adps", "command": "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"), "data": f"{args.data}: {args.slices} slices per acceleration",
        "samples": args.samples, "tuned": {label: p for label, m, p in rows if m == "adps"}, "results": {}}
    earlier = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    same_data = earlier.get("data") == out["data"] and earlier.get("samples") == out["samples"]
    if args.rows != "all" and same_data:
        labels = [label for label, _, _ in rows]
        out["kept_rows"] = {"labels": [label for label in earlier.get("results", {}).get("4x", {})
                                       if label not in labels],
                            "command": earlier.get("command"), "date": earlier.get("date")}
        out["tuned"] = {**{k: v for k, v in earlier.get("tuned", {}).items() if k not in labels}, **out["tuned"]}
    for acc in ("4x", "8x"):
        files = dataset_files(args.data, f"*_{acc}*")[:args.slices]
        per_row: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in rows}
        for path in files:
            acq = read_fastmri(path, slices=[1])
            ref = acq.reference[0]
            for label, method, params in rows:
                p = dict(params)
                if method == "adps":
                    p["samples"] = args.samples
                t0 = time.perf_counter()
                volume = reconstruct(acq, method, p).volume
                sec = time.perf_counter() - t0
                image = np.asarray(volume.magnitude()[0], np.float64)  # complex methods: the magnitude, as written
                row = {"psnr": psnr(ref, image), "ssim": ssim(ref, image), "nmse": nmse(ref, image), "seconds": sec}
                if volume.uncertainty is not None:
                    row.update(uncertainty_figures(ref, image, np.asarray(volume.uncertainty[0], np.float64)))
                per_row[label].append(row)
                print(f"[{time.strftime('%H:%M:%S')}] {acc} {path.name} {label}: "
                      f"{ {k: round(v, 4) for k, v in row.items()} }", flush=True)
        measured = {label: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} | {"slices": len(rs)}
                    for label, rs in per_row.items() if rs}
        kept = earlier.get("results", {}).get(acc, {}) if "kept_rows" in out else {}
        out["results"][acc] = {label: measured[label] if label in measured else kept[label]
                               for label, _, _ in ROWS if label in measured or label in kept}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
