"""Choosing DDS's warm start on the tuning slab: where on the diffusion schedule the sampler starts.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/dds_warm_start.py

DDS (the method's defaults on the ONNX engine, the shipped prior ``ct-prior-brain-sim``) at ``start`` in ``STARTS``:
1 starts from pure noise (the paper); below 1 from the ADMM-TV volume at its defaults noised to that fraction of the
schedule (``models.diffusion.sampling``'s warm start). Each at the paper's 50 steps, and at ``FEW_STEPS`` for the
speed question (fewer network calls from a warm start). Data: the central 8 slices of the tuning slab
(``brain-tuning``, noise seed 1, the acquisitions of ``benchmarks/ct_dds.py``) at its four brain cases: 8, 4 and 2
views and a 120-degree arc of 60 views. Nothing here sees the test slab.

The rule (one value for every case, like the method's other defaults): the start whose largest shortfall from
each case's best axial PSNR at 50 steps is smallest. ``benchmarks/ct_dds.py`` scores it on the held-out test slab
(``WARM_START`` there). Rows are cached under ``--scratch``; results: results/dds_warm_start.json.
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

import torch

from benchmarks.ct_dds import acquisition, axial, cached, cases, log, run, slug

STARTS = (1.0, 0.4, 0.3, 0.2, 0.1)
STEPS = 50
FEW_STEPS = 20
FEW_STEPS_STARTS = (0.3, 0.2)


def grid() -> list[tuple[float, int]]:
    """(start, steps) pairs: every start at ``STEPS``, and ``FEW_STEPS_STARTS`` at ``FEW_STEPS``."""
    return [(s, STEPS) for s in STARTS] + [(s, FEW_STEPS) for s in FEW_STEPS_STARTS]


def choose(rows: dict[str, list[dict]]) -> tuple[float, dict[str, float]]:
    """The start with the smallest largest shortfall (dB) from each case's best at ``STEPS``, and every start's
    largest shortfall."""
    worst: dict[str, float] = {}
    for start in STARTS:
        falls = []
        for case_rows in rows.values():
            full = [r for r in case_rows if r["steps"] == STEPS]
            top = max(r["psnr"] for r in full)
            falls.append(top - next(r["psnr"] for r in full if r["start"] == start))
        worst[f"{start:g}"] = max(falls)
    chosen = min(STARTS, key=lambda s: worst[f"{s:g}"])
    return chosen, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--i0", type=float, default=1e5)
    ap.add_argument("--tune-slices", type=int, default=8)
    ap.add_argument("--scratch", default="benchmarks/out/ct_dds")
    ap.add_argument("--json", default="benchmarks/results/dds_warm_start.json")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    rows: dict[str, list[dict]] = {}
    for case in cases(60)[:4]:
        tune = acquisition("brain-tuning", case, args.tune_slices, args.i0, 1, scratch)
        rows[case["name"]] = []
        for start, steps in grid():
            params = {"engine": "onnx", "start": start, "steps": steps}

            def score(tune=tune, params=params, case=case) -> dict:
                x, sec, _ = run(tune, "dds", params)
                p, s = axial(tune, x)
                log(f"{case['name']} {params}: {p:.2f} dB / {s:.4f}, {sec:.1f} s")
                return {"psnr": p, "ssim": s, "seconds": round(sec, 2)}

            label = f"warm-{slug(case['name'])}-{args.tune_slices}-{start:g}-{steps}"
            rows[case["name"]].append({"start": start, "steps": steps, **cached(scratch / f"{label}.json", score)})
    chosen, worst = choose(rows)
    out = {
        "benchmark": "dds_warm_start",
        "command": "OMP_NUM_THREADS=2 PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "model_id": "ct-prior-brain-sim",
        "data": f"brain-tuning slab, central {args.tune_slices} slices, I0 {args.i0:g}, noise seed 1 (the tuning "
                "acquisitions of benchmarks/ct_dds.py)",
        "settings": "DDS at the method's defaults on the ONNX engine but start and steps; seconds include the "
                    "warm start's ADMM-TV (which the consistency report reuses)",
        "rule": f"the start with the smallest largest shortfall from each case's best axial PSNR at {STEPS} steps",
        "largest_shortfall_db": worst,
        "chosen_start": chosen,
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    log(f"chose start {chosen:g} (largest shortfalls {worst}); wrote {args.json}")


if __name__ == "__main__":
    main()
