"""``recon demo``: the main job end to end on embedded defaults, no server needed.

Simulates a small brain MRI study, reconstructs it with every MRI method, writes NIfTI and PNG
results and prints the metrics table against the ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

from recon_service.cli import _write_mri_set, format_summary

DEMO_MRI_METHODS = ("zero-filled", "cg-sense", "l1-wavelet")


def run_demo(out: Path) -> int:
    from pipelines.evaluate import evaluate_directory
    from pipelines.pipeline import reconstruct_file
    from pipelines.simulate import mri

    cfg = mri.MRISimulationConfig(size=128, coils=8, slices=4)
    data = out / "mri"
    for acc in (4.0, 8.0):
        specs = mri.plan("test", ("t1", "t2"), ("axial",), (acc,), cfg, max_files=2)
        _write_mri_set(data / f"{acc:g}x", specs, cfg)
    print(f"simulated brain MRI study: {data}")

    first = sorted((data / "4x").glob("*.h5"))[0]
    for method in DEMO_MRI_METHODS:
        result = reconstruct_file(first, method, out / "recon")
        print(f"{method:<12} -> {result.outputs['nifti']}  {result.outputs['png']}")

    for acc in ("4x", "8x"):
        summary = evaluate_directory(data / acc, DEMO_MRI_METHODS)
        (out / f"metrics_mri_{acc}.json").write_text(json.dumps(summary, indent=2))
        print(f"\nMRI {acc}, {summary['volumes']} volumes (simulated brain, held-out slices):")
        print(format_summary(summary))
    print(f"\nresults in {out}")
    return 0
