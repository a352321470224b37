"""Every MRI method on the simulated brain benchmark: quality on the held-out sets and time, in one run.

    make bench-data    # once: recon simulate mri --out data/brain-bench --set all (the training split is also here)
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_brain.py [--data data/brain-bench] [--methods a,b,c]
    PYTHONPATH=. python benchmarks/mri_brain.py --cards recurrentvarnet-brain-sim,rim-brain-sim

One process, one torch thread (protocol: benchmarks/README.md). The learned methods run the shipped weights
from ``models/zoo/`` (loaded and checksum-verified against their cards before anything runs; torch eager), the
classical ones their defaults. Every method reconstructs from k-space to image, maps included.

* Time: one held-out file (the first ``test`` file at 4x; 8 coils, 128 x 128, 4 slices), every method back to
  back in each round, rounds repeated ``--repeats`` times after one warm-up round; the median per method of
  (a) one slice (the file's first slice alone) and (b) the whole 4-slice slab, reported as such (seconds per
  slab, not divided into per-slice figures). Ratios are against CG-SENSE in the same rounds.
* Quality: fastMRI's PSNR (data range = target max), SSIM 7x7 and NMSE on magnitudes against the noise-free RSS
  reference, mean ± std over volumes, on the held-out sets only (``test``: axial slabs of subjects never
  trained on; ``test-orientation``: coronal and sagittal; ``test-contrast``: FLAIR, a contrast no model saw),
  at 4x and 8x. Nothing was trained or tuned on these files.

Results go to benchmarks/results/mri_brain.json; the markdown tables are printed. ``--cards`` prints the metrics
``recon zoo ship`` stored in the named zoo cards instead, without evaluating again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from pipelines.data import MRIAcquisition
from pipelines.evaluate import HELD_OUT_SETS, dataset_files, evaluate_held_out
from pipelines.pipeline import load, reconstruct
from pipelines.reconstructors import default_models, get
from pipelines.zoo import ZOO_DIR, ModelError, load_card, load_model

DEFAULT_METHODS = "zero-filled,cg-sense,l1-wavelet,rim,recurrentvarnet"
BASELINE = "cg-sense"


def shipped_models(methods: list[str]) -> dict[str, dict[str, Any]]:
    """The zoo model of each learned method, loaded once here so a checksum mismatch stops the run."""
    models = {}
    for method, model_id in default_models().items():
        if method in methods:
            model, card = load_model(model_id)  # raises ModelError unless the weights match the card's sha256
            models[method] = {"model_id": model_id, "sha256": card["sha256"], "checksum_verified": True,
                              "parameters": sum(p.numel() for p in model.parameters()), "config": card["config"]}
    return models


def defaults(methods: list[str]) -> dict[str, dict[str, Any]]:
    """Each method's parameters as run (its declared defaults)."""
    return {m: get("mri", m).check(None).model_dump() for m in methods}


def run_seconds(acq: MRIAcquisition, method: str, models: dict[str, dict[str, Any]]) -> float:
    """Seconds of one reconstruction (``reconstruct``'s timer: maps and solver or network, no metrics)."""
    volume = reconstruct(acq, method).volume
    if method in models and volume.attrs.get("weights_sha256") != models[method]["sha256"]:
        raise ModelError(f"{method} ran weights {volume.attrs.get('weights_sha256')}, not the verified ones")
    return float(volume.attrs["seconds"])


def time_methods(path: Path, methods: list[str], models: dict[str, dict[str, Any]], repeats: int) -> dict:
    """Median seconds of one slice and of the whole slab per method, methods back to back in each round."""
    slab = load(path)
    single = dataclasses.replace(slab, kspace=slab.kspace[:1], reference=slab.reference[:1])
    work = {"single slice": single, f"slab of {slab.num_slices} slices": slab}
    times: dict[tuple[str, str], list[float]] = {(m, w): [] for m in methods for w in work}
    for round_ in range(repeats + 1):  # round 0 warms up (imports, caches, oneDNN)
        for method in methods:
            for label, acq in work.items():
                seconds = run_seconds(acq, method, models)
                if round_:
                    times[(method, label)].append(seconds)
    rows = []
    for label, acq in work.items():
        base = statistics.median(times[(BASELINE, label)]) if BASELINE in methods else None
        for method in methods:
            median = statistics.median(times[(method, label)])
            ratio = None if base is None else median / base
            rows.append({"method": method, "work": label, "slices": acq.num_slices, "seconds": median,
                         "seconds_all": times[(method, label)], "ratio_vs_cg_sense": ratio})
    return {"file": f"{path.parent.name}/{path.name}", "coils": slab.num_coils, "matrix": list(slab.image_shape),
            "repeats": repeats, "rows": rows}


def score(data: str, methods: list[str]) -> dict:
    """Quality per held-out set and acceleration (seconds dropped: the timing section is the time figure)."""
    results = evaluate_held_out(data, methods, progress=lambda name, acc, summary: print(
        f"done: {name} {acc} ({summary['volumes']} volumes)", flush=True))
    for by_acc in results.values():
        for summary in by_acc.values():
            for m in summary["methods"].values():
                m.pop("seconds_per_slice")
    return results


def command_line(args: argparse.Namespace) -> str:
    extra = "" if args.methods == DEFAULT_METHODS else f" --methods {args.methods}"
    return (f"OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/mri_brain.py --data {args.data} "
            f"--repeats {args.repeats}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/brain-bench")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up round")
    parser.add_argument("--out", default="benchmarks/results/mri_brain.json")
    parser.add_argument("--cards", help="comma-separated zoo model ids: print their stored metrics instead")
    args = parser.parse_args()
    if args.cards:
        try:
            print_table(results_from_cards(args.cards.split(",")))
        except ModelError as err:
            parser.error(str(err))
        return
    missing = [name for name in HELD_OUT_SETS if not (Path(args.data) / name).is_dir()]
    if missing:
        parser.error(f"{args.data} has no {', '.join(missing)}: make the benchmark data with `make bench-data` "
                     f"(or `recon simulate mri --out {args.data} --set all`)")
    torch.set_num_threads(1)
    methods = args.methods.split(",")
    start, load = time.perf_counter(), os.getloadavg()
    models = shipped_models(methods)
    timing = time_methods(dataset_files(Path(args.data) / "test", "*_4x*")[0], methods, models, args.repeats)
    print(timing_table(timing), flush=True)
    quality = score(args.data, methods)
    results = {"command": command_line(args), "torch_threads": torch.get_num_threads(),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "load_average": {"start": load, "end": os.getloadavg()},
               "models": models, "params": defaults(methods), "timing": timing, "quality": quality,
               "wall_seconds": time.perf_counter() - start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(quality_table(quality))


def timing_table(timing: dict) -> str:
    """The BENCHMARKS.md timing table of a results file's ``timing``."""
    lines = ["| method | work | seconds (median) | vs cg-sense |", "|---|---|---|---|"]
    for r in timing["rows"]:
        ratio = r["ratio_vs_cg_sense"]
        lines.append(f"| {r['method']} | {r['work']} | {r['seconds']:.3f} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines)


def quality_table(quality: dict) -> str:
    """The BENCHMARKS.md quality table of a results file's ``quality``."""
    lines = ["| set | R | method | PSNR (dB) | SSIM | NMSE |", "|---|---|---|---|---|---|"]
    for name, by_acc in quality.items():
        for acc, summary in by_acc.items():
            for method, m in summary["methods"].items():
                lines.append(f"| {name} ({summary['volumes']} vol.) | {acc} | {method} | {m['psnr']['mean']:.2f} ± "
                             f"{m['psnr']['std']:.2f} | {m['ssim']['mean']:.4f} ± {m['ssim']['std']:.4f} | "
                             f"{m['nmse']['mean']:.4f} |")
    return "\n".join(lines)


def results_from_cards(model_ids: list[str], zoo: Path = ZOO_DIR) -> dict:
    """Card metrics ``{set: {R: metrics}}`` regrouped as evaluate_held_out's ``{set: {R: {methods: ...}}}``."""
    results: dict = {}
    for model_id in model_ids:
        card = load_card(model_id, zoo)
        if "metrics" not in card:
            raise ModelError(f"{model_id}: card has no metrics (ship it with recon zoo ship to measure them)")
        for name, by_acc in card["metrics"].items():
            for acc, m in by_acc.items():
                slot = results.setdefault(name, {}).setdefault(acc, {"volumes": m["volumes"], "methods": {}})
                slot["methods"][card["kind"]] = m
    return results


def print_table(results: dict) -> None:
    """The cards' stored metrics (``--cards``), with the seconds per slice ``recon zoo ship`` measured."""
    print("| set | R | method | PSNR (dB) | SSIM | NMSE | s/slice |")
    print("|---|---|---|---|---|---|---|")
    for name, by_acc in results.items():
        for acc, summary in by_acc.items():
            for method, m in summary["methods"].items():
                print(f"| {name} ({summary['volumes']} vol.) | {acc} | {method} | {m['psnr']['mean']:.2f} ± "
                      f"{m['psnr']['std']:.2f} | {m['ssim']['mean']:.4f} ± {m['ssim']['std']:.4f} | "
                      f"{m['nmse']['mean']:.4f} | {m['seconds_per_slice']:.3f} |")


if __name__ == "__main__":
    main()
