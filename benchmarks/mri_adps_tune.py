"""The tuning side of benchmarks/mri_adps.py: A-DPS's one data-consistency setting per mode, chosen on the
validation set (never the test set it is scored on).

    PYTHONPATH=. python benchmarks/mri_adps_tune.py [--slices 1] [--samples 1]

Grid (the same size for every row): the exact mode's likelihood ``step_size`` in {0.5, 1, 2, 4, 8} (1 is the
reference's) for each prior, the fast mode's proximal weight ``gamma`` in {0.5, 1, 2, 4, 8} (1 = 1/||A^H A||) with the
ambient prior on ONNX Runtime. Scored by mean PSNR of the mean of ``--samples`` draws on ``--slices`` slices per
acceleration (4x and 8x) of data/brain-bench/val (the second slice of each file, in file order). Writes
benchmarks/results/mri_adps_tuning.json, which mri_adps.py reads.
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

import numpy as np
import torch

from pipelines.evaluate import dataset_files
from pipelines.io.fastmri import read_fastmri
from pipelines.metrics import psnr
from pipelines.pipeline import reconstruct

GRID = (0.5, 1.0, 2.0, 4.0, 8.0)
ROWS = {  # row label of mri_adps.py -> (the setting tuned, fixed params)
    "adps, ambient prior": ("step_size", {"model_id": "mri-prior-ambient-brain-sim", "mode": "adps"}),
    "adps, fully sampled prior": ("step_size", {"model_id": "mri-prior-full-brain-sim", "mode": "adps"}),
    "adps fast, ambient prior": ("gamma", {"model_id": "mri-prior-ambient-brain-sim", "mode": "fast",
                                           "engine": "onnx"}),
}
RESULTS = Path(__file__).resolve().parent / "results" / "mri_adps_tuning.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/brain-bench/val")
    ap.add_argument("--slices", type=int, default=1, help="slices per acceleration")
    ap.add_argument("--samples", type=int, default=1)
    args = ap.parse_args()
    cases = []
    for acc in ("4x", "8x"):
        for path in dataset_files(args.data, f"*_{acc}*")[:args.slices]:
            acq = read_fastmri(path, slices=[1])
            cases.append((path.name, acq))
    out = {"benchmark": "mri_adps_tune",
           "command": "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
           "date": time.strftime("%Y-%m-%d"), "cases": [name for name, _ in cases], "samples": args.samples,
           "grid": list(GRID), "rows": {}}
    for label, (setting, fixed) in ROWS.items():
        scores = {}
        for value in GRID:
            values = []
            for name, acq in cases:
                params = {**fixed, setting: value, "samples": args.samples}
                image = reconstruct(acq, "adps", params).volume.magnitude()[0]
                values.append(psnr(acq.reference[0], np.asarray(image, np.float64)))
                print(f"[{time.strftime('%H:%M:%S')}] {label} {setting}={value} {name}: {values[-1]:.2f} dB",
                      flush=True)
            scores[str(value)] = float(np.mean(values))
        best = max(scores, key=scores.get)
        out["rows"][label] = {"setting": setting, "psnr_by_value": scores, "chosen": {setting: float(best)}}
        RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["rows"], indent=1))


if __name__ == "__main__":
    main()
