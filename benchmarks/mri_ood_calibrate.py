"""Calibrating the learned MRI methods' out-of-distribution flag, and checking it where it must fire.

    make bench-data    # also the equispaced-mask test set, data/brain-equispaced
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_ood_calibrate.py [--write-cards] [--models a,...] [--workers N]
        [--reuse] [--calibration-sets val,val-equispaced]

Each shipped network or MRI diffusion prior (``--models``) reconstructs, with its defaults (a prior: with ``adps``
on the service's path, ``PRIOR_PATH``), every file of

* the calibration sets, the only files the thresholds see: the brain benchmark's validation slabs, axial (``val``),
  coronal and sagittal (``val-orientation``), and axial under equispaced masks (``data/brain-equispaced/val``), 54
  files: the variation the flag must let through on the held-out sets, from slabs none of them shares. (With the
  ``val`` files alone, 12, an in-distribution file exceeds the largest of them with probability about 1/13 per
  figure, and the held-out sets' orientations and masks were never seen.)
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
``--calibration-sets`` calibrates on some of the calibration sets only (the files of the others are still scored,
and their flag rate reported); the fully sampled prior is calibrated on the axial ones, ``val,val-equispaced``:
its coronal and sagittal images are as far from L1-wavelet's as the third-party ones, and thresholds that let them
through let the third-party images through too (``results/mri_ood_calibrate_full_all_sets.json``).
``--reuse`` takes the rows of files already scored there (the same weights; for a prior the same sampler settings,
checked against this run's) and scores only the rest, for a calibration set that grew.
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

from pipelines.confidence import calibrate
from pipelines.data import MRIAcquisition
from pipelines.evaluate import dataset_files
from pipelines.metrics import psnr, ssim
from pipelines.pipeline import load, reconstruct
from pipelines.zoo import ZOO_DIR, load_card

MARGIN = 1.1
DEFAULT_MODELS = "recurrentvarnet-brain-sim,rim-brain-sim"
CALIBRATION = {"val": "data/brain-bench/val", "val-orientation": "data/brain-bench/val-orientation",
               "val-equispaced": "data/brain-equispaced/val"}
HELD_OUT = {"test": "data/brain-bench/test", "test-orientation": "data/brain-bench/test-orientation",
            "test-contrast": "data/brain-bench/test-contrast", "test-equispaced": "data/brain-equispaced/test"}
KIND_METHOD = {"recurrentvarnet": "recurrentvarnet", "rim": "rim", "mri-prior": "adps"}
PRIOR_PATH = {"engine": "onnx", "mode": "fast"}
"""A diffusion prior is calibrated on the path the service runs (``mri-adps``: the fast mode on ONNX Runtime, its
default steps, draws and ``gamma``, the card's ``sampler_defaults``); its card records those settings (``ood.sampler``),
and the report of a run with other settings says it is not calibrated for them."""


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


DERIVED = ("flagged", "l1_psnr", "nominal")  # a row's fields this script adds after scoring


def earlier_results(out: Path) -> dict[str, Any]:
    return json.loads(out.read_text()) if out.is_file() else {}


def reusable_keys(earlier: dict[str, Any], sets: dict[str, str]) -> set[str]:
    """The set names whose files an earlier run scored from the same folders (third-party cases are simulated
    by the same code every run)."""
    calibration = earlier.get("calibration")
    before = {**({"val": calibration} if isinstance(calibration, str) else calibration or {}),
              **(earlier.get("held_out") or {})}
    return {name for name, path in sets.items() if before.get(name) == path} | {"third-party"}


def reused_rows(earlier_rows: dict[str, Any], inputs: dict[str, Any], names: set[str]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in earlier_rows[k].items() if f not in DERIVED}
            for k in inputs if k in earlier_rows and k.split("/")[0] in names}


def score_missing(inputs: dict[str, Path | MRIAcquisition], done: dict[str, dict[str, Any]], method: str,
                  params: dict[str, Any] | None, workers: int) -> dict[str, dict[str, Any]]:
    todo = {k: v for k, v in inputs.items() if k not in done}
    print(f"{params.get('model_id') if params else method}: {len(done)} files reused, {len(todo)} to score",
          flush=True)
    return {**done, **score_all(todo, method, params, workers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--write-cards", action="store_true", help="store the thresholds in the models' cards")
    parser.add_argument("--out", default="benchmarks/results/mri_ood_calibrate.json")
    parser.add_argument("--workers", type=int, default=1, help="processes of one thread each (files in parallel)")
    parser.add_argument("--calibration-sets", default=",".join(CALIBRATION),
                        help=f"the sets the thresholds are calibrated on, some of {', '.join(CALIBRATION)}")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the rows of files the --out results already hold (same weights and settings)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    chosen = args.calibration_sets.split(",")
    if unknown := sorted(set(chosen) - set(CALIBRATION)):
        parser.error(f"--calibration-sets: unknown {', '.join(unknown)}; choose from {', '.join(CALIBRATION)}")
    sets = {**CALIBRATION, **HELD_OUT}
    files = {name: dataset_files(path) for name, path in sets.items()}
    from pipelines.simulate.third_party import benchmark_cases

    third = benchmark_cases()
    inputs: dict[str, Path | MRIAcquisition] = {f"{name}/{p.name}": p for name, paths in files.items() for p in paths}
    inputs.update({f"third-party/{case}": acq for case, acq in third.items()})
    out = Path(args.out)
    earlier = earlier_results(out)
    names = reusable_keys(earlier, sets) if args.reuse else set()
    l1 = score_missing(inputs, reused_rows(earlier.get("l1_wavelet") or {}, inputs, names), "l1-wavelet", None,
                       args.workers)
    print(f"l1-wavelet: {len(l1)} cases", flush=True)

    results: dict[str, Any] = {}
    for model_id in args.models.split(","):
        card = load_card(model_id)
        method = KIND_METHOD[card["kind"]]
        params = {"model_id": model_id, **(PRIOR_PATH if method == "adps" else {})}
        before = (earlier.get("models") or {}).get(model_id) or {}
        done = reused_rows(before.get("rows") or {}, inputs, names) if before.get("sha256") == card["sha256"] else {}
        rows = score_missing(inputs, done, method, params, args.workers)
        samplers = {json.dumps(r["sampler"], sort_keys=True): r["sampler"] for r in rows.values() if "sampler" in r}
        if len(samplers) > 1:  # a prior whose defaults moved since the reused rows were scored
            raise SystemExit(f"{model_id}: the rows ran with different sampler settings {sorted(samplers)}; run "
                             "without --reuse")
        for key, source in inputs.items():
            if isinstance(source, Path):
                rows[key]["nominal"] = source.stem.split("_")[-1]
        calibration = [r for k, r in rows.items() if k.split("/")[0] in chosen]
        limits = calibrate(calibration, MARGIN)
        for key, row in rows.items():
            row["flagged"] = bool(limits.reasons(row))
            row["l1_psnr"] = l1[key]["psnr"]
        def flag_rate(name: str, rows: dict[str, dict[str, Any]] = rows) -> float:
            return statistics.fmean(float(rows[f"{name}/{p.name}"]["flagged"]) for p in files[name])

        false_flags = {name: flag_rate(name) for name in HELD_OUT}
        left_out = {name: flag_rate(name) for name in CALIBRATION if name not in chosen}
        pooled = [r["flagged"] for k, r in rows.items() if k.split("/")[0] in HELD_OUT]
        third_rows = {k: r for k, r in rows.items() if k.startswith("third-party/")}
        covered = all(r["flagged"] or r["psnr"] >= r["l1_psnr"] for r in third_rows.values())
        results[model_id] = {
            "method": method, "sha256": card["sha256"], "calibration_sets": chosen, "thresholds": limits.to_dict(),
            "false_flag_rate": {**false_flags, "held-out pooled": statistics.fmean(float(f) for f in pooled),
                                "held-out files": len(pooled)},
            "flag_rate_calibration_sets_left_out": left_out,
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
                "calibrated_on": f"{', '.join(CALIBRATION[n] for n in chosen)} ({len(calibration)} files): "
                                 f"{MARGIN} x the largest residual, {MARGIN} x the largest disagreement at each "
                                 "nominal acceleration"
                                 + ("" if limits.uncertainty is None else
                                    f", and {MARGIN} x the largest uncertainty mean"),
                "false_flag_rate": results[model_id]["false_flag_rate"],
                "third_party_flagged_or_at_least_l1": covered,
                "command": "OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_ood_calibrate.py --write-cards"
                           + ("" if model_id in DEFAULT_MODELS.split(",") else f" --models {model_id}")
                           + ("" if chosen == list(CALIBRATION) else f" --calibration-sets {args.calibration_sets}")}
            if samplers:  # a diffusion prior: its thresholds hold for these settings only
                # in the report's order, which the note of a run with other settings follows
                stored["ood"].update(sampler=next(iter(samplers.values())), engine=PRIOR_PATH["engine"])
            path.write_text(json.dumps(stored, indent=2) + "\n")
    kept = {}  # models calibrated by an earlier run on the same data keep their entries
    if (earlier.get("calibration"), earlier.get("margin"), earlier.get("held_out")) == (CALIBRATION, MARGIN, HELD_OUT):
        kept = {m: r for m, r in earlier.get("models", {}).items() if m not in results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_ood_calibrate.py --write-cards "
                   "[--models a,b,...]",
        "margin": MARGIN, "calibration": CALIBRATION, "held_out": HELD_OUT, "l1_wavelet": l1,
        "models": {**kept, **results}}, indent=1))


if __name__ == "__main__":
    main()
