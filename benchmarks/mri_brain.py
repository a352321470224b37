"""Image quality of every MRI method on the simulated brain benchmark's held-out sets, at 4x and 8x.

    make bench-data    # once: recon simulate mri --out data/brain-bench --set all (the training split is also here)
    PYTHONPATH=. python benchmarks/mri_brain.py [--data data/brain-bench] [--methods a,b,c]
    PYTHONPATH=. python benchmarks/mri_brain.py --cards recurrentvarnet-brain-sim,rim-brain-sim

Sets: ``test`` (axial slabs never trained on), ``test-orientation`` (coronal and sagittal), ``test-contrast``
(FLAIR). Metrics are fastMRI's (PSNR with data range = target max, SSIM 7x7, NMSE) on magnitudes against the
noise-free RSS reference, mean ± std over volumes; seconds per slice include map estimation. Results go to
benchmarks/out/mri_brain.json and a markdown table is printed. ``--cards`` prints the same table from the
metrics that ``recon zoo ship`` measured and stored in the named zoo cards, without evaluating again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.evaluate import HELD_OUT_SETS, evaluate_held_out
from pipelines.zoo import ZOO_DIR, ModelError, load_card

DEFAULT_METHODS = "zero-filled,cg-sense,l1-wavelet,rim,recurrentvarnet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/brain-bench")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--out", default="benchmarks/out/mri_brain.json")
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
    methods = args.methods.split(",")
    results = evaluate_held_out(args.data, methods, progress=lambda name, acc, summary: print(
        f"done: {name} {acc} ({summary['volumes']} volumes)", flush=True))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results)


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
