"""DDS's shipped out-of-distribution flag on the whole held-out test slab, in chunks of 8 slices.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/ct_ood_heldout_slab.py   # about 20 min on 2 cores

``ct_ood_calibrate.py`` states the false-flag rate on the test slab's central 8 slices. This scores the flag, as
shipped in ``ct-prior-brain-sim``'s card, on all 64 slices (MNI z 10..73 mm) cut into 8 volumes of 8 slices, at
the issue's cases (8, 4 and 2 views, 60 views over 120 degrees; I0 1e5, noise seed 2, ``ct_dds.acquisition``),
with DDS at its defaults and ADMM-TV at its defaults beside it. Results: results/ct_ood_heldout_slab.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import torch

from benchmarks.ct_dds import acquisition, axial
from benchmarks.ct_ood_calibrate import nominal
from pipelines.data import CTAcquisition
from pipelines.pipeline import reconstruct

CASES = ({"views": 8, "arc": None}, {"views": 4, "arc": None}, {"views": 2, "arc": None}, {"views": 60, "arc": 120.0})
CHUNK, SLICES = 8, 64


def chunk(full: CTAcquisition, k: int) -> CTAcquisition:
    """Slices ``k * CHUNK`` to ``(k + 1) * CHUNK`` of ``full``, with their own affine."""
    part = slice(k * CHUNK, (k + 1) * CHUNK)
    affine = full.affine.copy()
    affine[:3, 3] += affine[:3, 2] * k * CHUNK
    return CTAcquisition(full.sinogram[part], full.angles, full.geometry, full.reference[part], affine,
                         dict(full.attrs), full.source)


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    rows = {}
    for case in CASES:
        full = acquisition("brain-test", case, SLICES, 1e5, 2, Path("benchmarks/out/ct_dds"))
        for k in range(SLICES // CHUNK):
            acq = chunk(full, k)
            dds = reconstruct(acq, "dds", {"engine": "onnx"}).volume
            report = dds.attrs["consistency_report"]
            key = f"{nominal(case)}, chunk {k}"
            rows[key] = {"z_mm": [10.0 + k * CHUNK, 10.0 + (k + 1) * CHUNK - 1], "flagged": report["flagged"],
                         "reasons": report["reasons"], "psnr": axial(acq, dds.data)[0],
                         "admm_psnr": axial(acq, reconstruct(acq, "admm-tv", None).volume.data)[0],
                         "residual_network_max": report.get("residual_network_max"),
                         "disagreement": report["disagreement"]}
            print(key, rows[key], flush=True)
    worse = [r for r in rows.values() if r["admm_psnr"] > r["psnr"]]
    out = {"command": "OMP_NUM_THREADS=2 PYTHONPATH=. python " + " ".join(sys.argv),
           "machine": f"{os.cpu_count()} cores, torch {torch.__version__}",
           "flag_rate": statistics.fmean(float(r["flagged"]) for r in rows.values()), "volumes": len(rows),
           "admm_tv_better": len(worse), "admm_tv_better_flagged": sum(r["flagged"] for r in worse), "rows": rows}
    Path("benchmarks/results/ct_ood_heldout_slab.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
