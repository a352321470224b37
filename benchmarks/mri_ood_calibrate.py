"""Calibrating the learned MRI methods' out-of-distribution flag, and checking it where it must fire.

    make bench-data    # also the equispaced-mask test set, data/brain-equispaced
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_ood_calibrate.py [--write-cards] [--models a,...] [--workers N]

Each shipped network or MRI diffusion prior (``--models``) reconstructs, with its defaults (a prior: with ``adps``
on the service's path, ``PRIOR_PATH``), every file of

* the calibration set: the brain benchmark's validation split (``val``), the only files the thresholds see;
* the held-out brain sets: ``test``, ``test-orientation``, ``test-contrast`` and an equispaced-mask copy of the test
  split (``data/brain-equispaced/test``), where the flag should stay quiet: their false-flag rates are stated;
* raw data made by tools the project did not write (``pipelines.simulate.third_party``): ISMRMRD's simulator
  (192 x 192, 12 coils, equispaced 4x with its own calibration lines, noise) and BART's phantom (256 x 256,
  8 coils) under ``bart poisson`` column masks at 4x and 8x and fully sampled; there every learned image must be
  at least as good as L1-wavelet or flagged.

The report of each image (``pipelines.confidence``) gives the largest per-slice network residual over the noise
level and the disagreement with L1-wavelet; the thresholds are ``MARGIN`` times the largest residual over the
calibration set, and ``MARGIN`` times the largest disagreement at 4x and at 8x (a line in the sampled
acceleration: L1-wavelet is worse at higher accelerations). ``--write-cards`` stores them, with the rates
measured here, in each model's card (``"ood"``), which is where the service reads them.
Results: results/mri_ood_calibrate.json (``--out``; the entries of models not in ``--models`` are kept from it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.confidence import FlagThresholds
from pipelines.data import MRIAcquisition
from pipelines.evaluate import dataset_files
from pipelines.metrics import psnr, ssim
from pipelines.pipeline import load, reconstruct
from pipelines.zoo import ZOO_DIR, load_card

MARGIN = 1.1
DEFAULT_MODELS = "recurrentvarnet-brain-sim,rim-brain-sim"
CALIBRATION = "val"
HELD_OUT = {"test": "data/brain-bench/test", "test-orientation": "data/brain-bench/test-orientation",
            "test-contrast": "data/brain-bench/test-contrast", "test-equispaced": "data/brain-equispaced/test"}
KIND_METHOD = {"recurrentvarnet": "recurrentvarnet", "rim": "rim", "mri-prior": "adps"}
PRIOR_PATH = {"engine": "onnx", "mode": "fast"}
"""A diffusion prior is calibrated on the path the service runs (``mri-adps``: the fast mode on ONNX Runtime, its
default steps, draws and ``gamma``, the card's ``sampler_defaults``); its card records those settings (``ood.sampler``),
and the report of a run with other settings says it is not calibrated for them."""


def calibrate(rows: list[dict[str, Any]]) -> FlagThresholds:
    """``MARGIN`` x the largest network residual, ``MARGIN`` x the largest disagreement of each nominal
    acceleration group placed at the group's mean sampled acceleration, and for a diffusion method ``MARGIN`` x the
    largest uncertainty mean."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["nominal"], []).append(row)
    points = sorted((statistics.fmean(r["acceleration"] for r in g), MARGIN * max(r["disagreement"] for r in g))
                    for g in groups.values())
    spreads = [r["uncertainty"]["mean"] for r in rows if "uncertainty" in r]
    return FlagThresholds(MARGIN * max(r["residual_network_max"] for r in rows), tuple(points),
                          MARGIN * max(spreads) if spreads else None)


def score(acq: MRIAcquisition, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    result = reconstruct(acq, method, params)
    magnitude = np.abs(result.volume.data)
    out: dict[str, Any] = {"psnr": psnr(acq.reference, magnitude), "ssim": ssim(acq.reference, magnitude)}
    report = result.volume.attrs.get("consistency_report")
    if report is not None:
        for key in ("residual_network_max", "disagreement", "acceleration"):
            out[key] = report[key]
        for key in ("uncertainty", "sampler"):  # a diffusion method's: its draws' spread, the settings it ran with
            if key in report:
                out[key] = report[key]
    return out


def _score_job(job: tuple[str, Path | MRIAcquisition, str, dict[str, Any] | None]) -> tuple[str, dict[str, Any]]:
    key, source, method, params = job
    return key, score(load(source) if isinstance(source, Path) else source, method, params)


def score_all(inputs: dict[str, Path | MRIAcquisition], method: str, params: dict[str, Any] | None,
              workers: int) -> dict[str, dict[str, Any]]:
    """``score`` of every input, in ``workers`` processes of one thread each (the same figures as one process)."""
    jobs = [(key, source, method, params) for key, source in inputs.items()]
    if workers == 1:
        return dict(_score_job(job) for job in jobs)
    out: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for key, row in pool.map(_score_job, jobs):
            out[key] = row
            if len(out) % 20 == 0:
                print(f"  {method}: {len(out)} of {len(jobs)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--calibration", default="data/brain-bench/val")
    parser.add_argument("--write-cards", action="store_true", help="store the thresholds in the models' cards")
    parser.add_argument("--out", default="benchmarks/results/mri_ood_calibrate.json")
    parser.add_argument("--workers", type=int, default=1, help="processes of one thread each (files in parallel)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sets = {CALIBRATION: args.calibration, **HELD_OUT}
    files = {name: dataset_files(path) for name, path in sets.items()}
    from pipelines.simulate.third_party import benchmark_cases

    third = benchmark_cases()
    inputs: dict[str, Path | MRIAcquisition] = {f"{name}/{p.name}": p for name, paths in files.items() for p in paths}
    inputs.update({f"third-party/{case}": acq for case, acq in third.items()})
    l1 = score_all(inputs, "l1-wavelet", None, args.workers)
    print(f"l1-wavelet: {len(l1)} cases", flush=True)

    results: dict[str, Any] = {}
    for model_id in args.models.split(","):
        card = load_card(model_id)
        method = KIND_METHOD[card["kind"]]
        params = {"model_id": model_id, **(PRIOR_PATH if method == "adps" else {})}
        rows = score_all(inputs, method, params, args.workers)
        for key, source in inputs.items():
            if isinstance(source, Path):
                rows[key]["nominal"] = source.stem.split("_")[-1]
        calibration = [r for k, r in rows.items() if k.startswith(f"{CALIBRATION}/")]
        limits = calibrate(calibration)
        for key, row in rows.items():
            row["flagged"] = bool(limits.reasons(row))
            row["l1_psnr"] = l1[key]["psnr"]
        false_flags = {name: statistics.fmean(float(rows[f"{name}/{p.name}"]["flagged"]) for p in files[name])
                       for name in HELD_OUT}
        pooled = [r["flagged"] for k, r in rows.items() if k.split("/")[0] in HELD_OUT]
        third_rows = {k: r for k, r in rows.items() if k.startswith("third-party/")}
        covered = all(r["flagged"] or r["psnr"] >= r["l1_psnr"] for r in third_rows.values())
        results[model_id] = {
            "method": method, "sha256": card["sha256"], "thresholds": limits.to_dict(),
            "false_flag_rate": {**false_flags, "held-out pooled": statistics.fmean(float(f) for f in pooled),
                                "held-out files": len(pooled)},
            "third_party_flagged_or_at_least_l1": covered, "rows": rows}
        print(f"{model_id}: thresholds residual {limits.residual:.3f}, disagreement {limits.disagreement}; "
              f"false flags {', '.join(f'{k} {v:.1%}' for k, v in false_flags.items())}; third party covered: "
              f"{covered}", flush=True)
        for key, row in third_rows.items():
            print(f"  {key}: PSNR {row['psnr']:.2f} (l1-wavelet {row['l1_psnr']:.2f}), residual "
                  f"{row['residual_network_max']:.2f}, disagreement {row['disagreement']:.3f}, "
                  f"flagged {row['flagged']}")
        if args.write_cards:
            path = ZOO_DIR / model_id / "card.json"
            stored = json.loads(path.read_text())
            stored["ood"] = {
                "thresholds": results[model_id]["thresholds"], "margin": MARGIN,
                "calibrated_on": f"{args.calibration} ({len(calibration)} files): {MARGIN} x the largest residual, "
                                 f"{MARGIN} x the largest disagreement at each nominal acceleration"
                                 + ("" if limits.uncertainty is None else
                                    f", and {MARGIN} x the largest uncertainty mean"),
                "false_flag_rate": results[model_id]["false_flag_rate"],
                "third_party_flagged_or_at_least_l1": covered,
                "command": "OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_ood_calibrate.py --write-cards"
                           + ("" if model_id in DEFAULT_MODELS.split(",") else f" --models {model_id}")}
            samplers = {json.dumps(r["sampler"], sort_keys=True) for r in calibration if "sampler" in r}
            if samplers:  # a diffusion prior: its thresholds hold for these settings only
                if len(samplers) != 1:
                    raise RuntimeError(f"{model_id}: the calibration files ran with different sampler settings "
                                       f"{sorted(samplers)}")
                stored["ood"].update(sampler=json.loads(samplers.pop()), engine=PRIOR_PATH["engine"])
            path.write_text(json.dumps(stored, indent=2) + "\n")
    out = Path(args.out)
    kept = {}
    if out.is_file():  # models calibrated by an earlier run on the same data keep their entries
        earlier = json.loads(out.read_text())
        if (earlier.get("calibration"), earlier.get("margin"), earlier.get("held_out")) == (args.calibration, MARGIN,
                                                                                            HELD_OUT):
            kept = {m: r for m, r in earlier.get("models", {}).items() if m not in results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_ood_calibrate.py --write-cards "
                   "[--models a,b,...]",
        "margin": MARGIN, "calibration": args.calibration, "held_out": HELD_OUT, "l1_wavelet": l1,
        "models": {**kept, **results}}, indent=1))


if __name__ == "__main__":
    main()
