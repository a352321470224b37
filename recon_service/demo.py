"""``recon demo``: the main job end to end on embedded defaults, no server needed.

Simulates a small brain MRI study and a sparse-view CT study, reconstructs them with every method
(classical baselines and the shipped learned models), writes NIfTI and PNG results and prints the metrics
tables against the ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

from recon_service.cli import _write_mri_set, format_summary

DEMO_MRI_METHODS = ("zero-filled", "cg-sense", "l1-wavelet", "rim", "recurrentvarnet")
DEMO_CT_METHODS = ("fbp", "sirt", "admm-tv")


def _mri_methods() -> list[str]:
    from pipelines.zoo import DEFAULT_MODELS, list_models

    shipped = {card["id"] for card in list_models()}
    return [m for m in DEMO_MRI_METHODS if m not in DEFAULT_MODELS or DEFAULT_MODELS[m] in shipped]


def _report(out: Path, title: str, name: str, summary: dict) -> None:
    (out / f"metrics_{name}.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{title}, {summary['volumes']} volumes:")
    print(format_summary(summary))


def run_demo(out: Path) -> int:
    from pipelines.evaluate import evaluate_directory
    from pipelines.pipeline import reconstruct_file
    from pipelines.simulate import mri
    from pipelines.simulate.ct import simulate_ct_dataset

    out.mkdir(parents=True, exist_ok=True)
    methods = _mri_methods()
    cfg = mri.MRISimulationConfig(size=128, coils=8, slices=4)
    data = out / "mri"
    for acc in (4.0, 8.0):
        specs = mri.plan("test", ("t1", "t2"), ("axial",), (acc,), cfg, max_files=2)
        _write_mri_set(data / f"{acc:g}x", specs, cfg)
    print(f"simulated brain MRI study (held-out slices): {data}")
    first = sorted((data / "4x").glob("*.h5"))[0]
    for method in methods:
        result = reconstruct_file(first, method, out / "recon")
        print(f"{method:<16} -> {result.outputs['nifti']}  {result.outputs['png']}")
    for acc in ("4x", "8x"):
        _report(out, f"MRI {acc} (simulated brain, 8 coils, 128 x 128)", f"mri_{acc}",
                evaluate_directory(data / acc, methods))

    ct_data = out / "ct"
    simulate_ct_dataset(ct_data, views=8, source="brain", size=96, slices=8, noise_i0=1e5)
    print(f"\nsimulated sparse-view CT study (8 views, pseudo-CT brain): {ct_data}")
    first = sorted(ct_data.glob("*.h5"))[0]
    for method in DEMO_CT_METHODS:
        result = reconstruct_file(first, method, out / "recon")
        print(f"{method:<16} -> {result.outputs['nifti']}  {result.outputs['png']}")
    _report(out, "CT, 8 views (parallel beam, I0 = 1e5)", "ct_8views",
            evaluate_directory(ct_data, DEMO_CT_METHODS))
    print(f"\nresults in {out}")
    return 0
