"""The tuning side of benchmarks/mri_adps.py: A-DPS's one data-consistency setting per mode, chosen on the
validation set (never the test set it is scored on).

    PYTHONPATH=. python benchmarks/mri_adps_tune.py [--slices 1] [--stride 1] [--samples 1] [--rows all]

Grids: the exact mode's likelihood ``step_size`` in {0.5, 1, 2, 4, 8} (1 is the reference's) for each prior; the fast
mode's proximal weight ``gamma`` in {0.5, 1, 2, ..., 64} (1 = 1/||A^H A||) for each prior on ONNX Runtime (the
service's path). Scored by mean PSNR of the mean of ``--samples`` draws on ``--slices`` files per acceleration (4x
and 8x) of data/brain-bench/val, every ``--stride``-th file in file order (the second slice of each; stride 2 takes
one slab of each contrast). ``--rows`` (indices into ``ROWS``) tunes only those rows and keeps the others, with
their own cases, from the results file. Writes benchmarks/results/mri_adps_tuning.json, which mri_adps.py reads;
the fast rows' chosen ``gamma`` is also each prior's service default (``sampler_defaults`` in its card, written with
``--write-cards``), unless the card ``held`` the default at another value and says why.
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
from pipelines.metrics import psnr
from pipelines.pipeline import reconstruct
from pipelines.zoo import ZOO_DIR

GRIDS = {"step_size": (0.5, 1.0, 2.0, 4.0, 8.0), "gamma": (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)}
AMBIENT, FULL = "mri-prior-ambient-brain-sim", "mri-prior-full-brain-sim"
ROWS = {  # row label of mri_adps.py -> (the setting tuned, fixed params)
    "adps, ambient prior": ("step_size", {"model_id": AMBIENT, "mode": "adps"}),
    "adps, fully sampled prior": ("step_size", {"model_id": FULL, "mode": "adps"}),
    "adps fast, ambient prior": ("gamma", {"model_id": AMBIENT, "mode": "fast", "engine": "onnx"}),
    "adps fast, fully sampled prior": ("gamma", {"model_id": FULL, "mode": "fast", "engine": "onnx"}),
}
RESULTS = Path(__file__).resolve().parent / "results" / "mri_adps_tuning.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/brain-bench/val")
    ap.add_argument("--slices", type=int, default=1, help="files per acceleration (the second slice of each)")
    ap.add_argument("--stride", type=int, default=1, help="every stride-th file, in file order")
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--rows", default="all", help="indices into ROWS, e.g. 2,3 (none: only --write-cards); the "
                    "others are kept from the file")
    ap.add_argument("--write-cards", action="store_true", help="store the fast rows' chosen gamma in each prior's card "
                    "(sampler_defaults): the service's default for that prior")
    args = ap.parse_args()
    named = {"all": list(ROWS), "none": []}
    labels = named[args.rows] if args.rows in named else [list(ROWS)[int(i)] for i in args.rows.split(",")]
    cases = []
    for acc in ("4x", "8x"):
        for path in dataset_files(args.data, f"*_{acc}*")[::args.stride][:args.slices]:
            acq = read_fastmri(path, slices=[1])
            cases.append((path.name, acq))
    earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    kept = {label: {"cases": earlier.get("cases"), "samples": earlier.get("samples"),
                    "command": earlier.get("command"), "date": earlier.get("date"), **row}
            for label, row in earlier.get("rows", {}).items() if label not in labels}
    out = {"benchmark": "mri_adps_tune",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
           "date": time.strftime("%Y-%m-%d"), "grids": {k: list(v) for k, v in GRIDS.items()}, "rows": kept}
    command = "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv)
    out["command"] = command  # the latest run; each row names the run that tuned it
    for label in labels:
        setting, fixed = ROWS[label]
        scores = {}
        for value in GRIDS[setting]:
            values = []
            for name, acq in cases:
                params = {**fixed, setting: value, "samples": args.samples}
                image = reconstruct(acq, "adps", params).volume.magnitude()[0]
                values.append(psnr(acq.reference[0], np.asarray(image, np.float64)))
                print(f"[{time.strftime('%H:%M:%S')}] {label} {setting}={value} {name}: {values[-1]:.2f} dB",
                      flush=True)
            scores[str(value)] = float(np.mean(values))
        best = max(scores, key=scores.get)
        out["rows"][label] = {"setting": setting, "psnr_by_value": scores, "chosen": {setting: float(best)},
                              "cases": [name for name, _ in cases], "samples": args.samples, "command": command,
                              "date": out["date"]}
        out["rows"] = {k: out["rows"][k] for k in ROWS if k in out["rows"]}  # table order
        RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["rows"], indent=1))
    if args.write_cards:
        write_cards(out["rows"] if labels else earlier.get("rows", {}))


def write_cards(rows: dict[str, Any]) -> None:
    """The fast rows' chosen setting as their prior's ``sampler_defaults``, with what it was chosen on."""
    for label, (_, fixed) in ROWS.items():
        row = rows.get(label)
        if row is None or fixed["mode"] != "fast":
            continue
        path = ZOO_DIR / fixed["model_id"] / "card.json"
        card = json.loads(path.read_text())
        tuned = {"mode": "fast", "engine": fixed["engine"], "on": "data/brain-bench/val, the second slice of each of "
                 + ", ".join(row["cases"]), "samples": row["samples"], "psnr_by_value": row["psnr_by_value"],
                 "command": row["command"] + " --write-cards", "date": row["date"], "chosen": row["chosen"]}
        earlier = card.get("sampler_defaults") or {}
        if earlier.get("held"):  # the default stays where it is, for the reason the card gives
            card["sampler_defaults"] = {**earlier, "tuned": tuned}
            print(f"{fixed['model_id']}: chose {row['chosen']}, the card holds its default ({earlier['held']})")
        else:
            card["sampler_defaults"] = {**row["chosen"], "tuned": tuned}
            print(f"{fixed['model_id']}: sampler_defaults {row['chosen']}")
        path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
