"""The learned MRI networks with and without their data-consistency step, old against retrained, on held-out data.

    make bench-data    # also the equispaced-mask test set, data/brain-equispaced
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_consistency.py [--models a,b,...] [--add]

Sets (nothing here was trained or tuned on): the brain benchmark's ``test`` (axial), ``test-orientation`` (coronal,
sagittal) and ``test-contrast`` (FLAIR) splits at 4x and 8x, an equispaced-mask copy of the test split
(``data/brain-equispaced/test``) and a phantom set made by tools the project did not write
(``pipelines.simulate.third_party``: ISMRMRD's simulator, BART's phantom under ``bart poisson`` masks and fully
sampled). For each network the image of each slice is computed once and scored as it is (``off``) and after the
consistency step at the methods' default (``on``); L1-wavelet and CG-SENSE at their defaults are the classical rows.
PSNR/SSIM/NMSE of the magnitude against the reference, mean ± std over volumes; the ``flagged`` column counts the
volumes the model's calibrated out-of-distribution thresholds (its card) flag. Results:
results/mri_consistency.json; the markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.confidence import disagreement, thresholds_of
from pipelines.data import MRIAcquisition
from pipelines.evaluate import dataset_files
from pipelines.learned import DataConsistency, reconstruct_variants
from pipelines.methods._learned import CONSISTENCY_THRESHOLD
from pipelines.methods._mri import acquisition_noise
from pipelines.metrics import nmse, psnr, ssim
from pipelines.pipeline import load, reconstruct
from pipelines.sampling import acquisition_mask, sampled_acceleration
from pipelines.zoo import load_card, load_model

SETS = {"test": "data/brain-bench/test", "test-orientation": "data/brain-bench/test-orientation",
        "test-contrast": "data/brain-bench/test-contrast", "test-equispaced": "data/brain-equispaced/test"}
CLASSICAL = ("l1-wavelet", "cg-sense")


def cases() -> dict[str, dict[str, Any]]:
    """``{set/acceleration: {name: loader}}`` with loaders, so one acquisition is in memory at a time."""
    from pipelines.simulate.third_party import benchmark_cases

    out: dict[str, dict[str, Any]] = {}
    for name, path in SETS.items():
        for acc in ("4x", "8x"):
            out[f"{name} {acc}"] = {p.name: (lambda p=p: load(p)) for p in dataset_files(path, f"*_{acc}*")}
    out["phantoms"] = {name: (lambda a=acq: a) for name, acq in benchmark_cases().items()}
    return out


def metrics(acq: MRIAcquisition, image: np.ndarray) -> dict[str, float]:
    magnitude = np.abs(image)
    return {"psnr": psnr(acq.reference, magnitude), "ssim": ssim(acq.reference, magnitude),
            "nmse": nmse(acq.reference, magnitude)}


def network_volumes(model: torch.nn.Module, acq: MRIAcquisition) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The network's volume as it is and after the default consistency step, and the step's report."""
    mask, num_low = acquisition_mask(acq)
    step = DataConsistency(acquisition_noise(acq, mask)["sigma"], threshold=CONSISTENCY_THRESHOLD)
    volumes = reconstruct_variants(model, acq, mask, num_low, {"off": None, "on": step})
    return volumes["off"], volumes["on"], step.report()


def summarise(rows: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"volumes": len(rows)}
    for key in ("psnr", "ssim", "nmse"):
        values = [r[key] for r in rows]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
    if rows and "flagged" in rows[0]:
        out["flagged"] = sum(bool(r["flagged"]) for r in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="recurrentvarnet-brain-sim,rim-brain-sim")
    parser.add_argument("--out", default="benchmarks/results/mri_consistency.json")
    parser.add_argument("--add", action="store_true",
                        help="compute only --models' rows; the classical rows and other models' come from --out")
    parser.add_argument("--flags-only", action="store_true",
                        help="recompute the flag column of --out's rows from the cards' thresholds, nothing else")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.flags_only:
        stored = json.loads(Path(args.out).read_text())
        write(args, stored["rows"], list(stored["models"]), stored["command"])
        return
    models = {}
    for model_id in args.models.split(","):
        model, card = load_model(model_id)
        model.eval()
        models[model_id] = model
    rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    kept: list[str] = []
    if args.add:
        stored = json.loads(Path(args.out).read_text())
        kept = [m for m in stored["models"] if m not in models]
        rows = {s: {k: v for k, v in per.items() if k.split(" consistency ")[0] not in models}
                for s, per in stored["rows"].items()}
    for set_name, loaders in cases().items():
        per_set = rows.setdefault(set_name, {})
        for file_name, loader in loaders.items():
            acq = loader()
            baseline = None
            for method in CLASSICAL if not args.add else ("l1-wavelet",):
                volume = reconstruct(acq, method).volume.data
                baseline = volume if method == "l1-wavelet" else baseline
                if not args.add:
                    per_set.setdefault(method, []).append({"file": file_name, **metrics(acq, volume)})
            mask, _ = acquisition_mask(acq)
            acceleration = sampled_acceleration(mask, acq.kspace.shape[-2:])
            for model_id, model in models.items():
                off, on, report = network_volumes(model, acq)
                for label, volume in (("off", off), ("on", on)):
                    per_set.setdefault(f"{model_id} consistency {label}", []).append({
                        "file": file_name, **metrics(acq, volume), "acceleration": acceleration,
                        "residual_network_max": report["residual_network_max"],
                        "disagreement": disagreement(volume, baseline)})
            print(f"{set_name} {file_name}", flush=True)
    every = [*kept, *models]
    write(args, rows, every,
          f"OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_consistency.py --models {','.join(every)}")


def write(args: argparse.Namespace, rows: dict[str, dict[str, list[dict[str, Any]]]], models: list[str],
          command: str) -> None:
    """Flags from the cards' thresholds now (benchmarks/mri_ood_calibrate.py may have run meanwhile), the summary,
    the printed table and the results file."""
    limits = {m: thresholds_of(load_card(m)) for m in models}
    for per in rows.values():
        for name, entries in per.items():
            model_id = name.split(" consistency ")[0]
            if limits.get(model_id) is not None:
                for row in entries:
                    row["flagged"] = bool(limits[model_id].reasons(row))
    summary = {s: {k: summarise(v) for k, v in per.items()} for s, per in rows.items()}
    print("| set | method | PSNR | SSIM | NMSE | flagged |\n|---|---|---|---|---|---|")
    for set_name, per in summary.items():
        for name, s in per.items():
            flagged = f"{s['flagged']}/{s['volumes']}" if "flagged" in s else ""
            print(f"| {set_name} ({s['volumes']} vol.) | {name} | {s['psnr']:.2f} ± {s['psnr_std']:.2f} | "
                  f"{s['ssim']:.4f} ± {s['ssim_std']:.4f} | {s['nmse']:.4f} | {flagged} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": command, "consistency_threshold": CONSISTENCY_THRESHOLD,
        "models": {m: {"sha256": load_card(m)["sha256"], "ood": load_card(m).get("ood", {}).get("thresholds")}
                   for m in models},
        "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
