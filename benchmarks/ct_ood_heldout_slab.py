"""DDS's shipped out-of-distribution flag on the whole held-out test slab, in chunks of 8 slices.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/ct_ood_heldout_slab.py   # about 20 min on 2 cores

``ct_ood_calibrate.py`` states the false-flag rate on the test slab's central 8 slices. This scores the flag, as
shipped in ``ct-prior-brain-sim``'s card, on all 64 slices (MNI z 10..73 mm) cut into 8 volumes of 8 slices, at
the issue's cases (8, 4 and 2 views, 60 views over 120 degrees; I0 1e5, noise seed 2, ``ct_dds.acquisition``),
with DDS at its defaults and ADMM-TV at its defaults beside it (``ct_ood_calibrate.score``). The rows are cached
under ``--scratch`` by the prior's weights, and judged with the card's thresholds at the end, so a new calibration
is scored again without running DDS; ``--thresholds-from`` judges them with those of a ``ct_ood_calibrate.py``
results file instead. ``--write-card`` stores the rate in the card's ``ood.false_flag_rate``, beside the central
slices' rate. Results: results/ct_ood_heldout_slab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

from benchmarks.ct_dds import acquisition, cached, log, slug
from benchmarks.ct_ood_calibrate import CHUNK, MODEL_ID, chunk, nominal, rows_dir, score
from benchmarks.ct_ood_calibrate import SLAB_CASES as CASES
from benchmarks.ct_ood_calibrate import SLAB_SLICES as SLICES
from pipelines.confidence import thresholds_of
from pipelines.zoo import ZOO_DIR

Z_FIRST_MM = 10.0  # the test slab's first slice, 1 mm apart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", default="benchmarks/out/ct_ood_heldout")
    parser.add_argument("--out", default="benchmarks/results/ct_ood_heldout_slab.json")
    parser.add_argument("--thresholds-from", help="a ct_ood_calibrate.py results file whose thresholds judge the rows")
    parser.add_argument("--write-card", action="store_true", help=f"store the rate in {MODEL_ID}'s card")
    args = parser.parse_args()
    if args.write_card and args.thresholds_from:
        parser.error("--write-card stores the card's own rate; leave out --thresholds-from")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    card_path = ZOO_DIR / MODEL_ID / "card.json"
    card = json.loads(card_path.read_text())
    judge = card
    if args.thresholds_from:
        calibration = json.loads(Path(args.thresholds_from).read_text())
        if calibration["sha256"] != card["sha256"]:
            parser.error(f"--thresholds-from: {args.thresholds_from} was calibrated for other weights")
        judge = {"ood": {"thresholds": calibration["thresholds"], "sampler": card["ood"]["sampler"],
                         "calibrated_on": calibration["calibrated_on"]}}
    scratch = Path(args.scratch)
    rows = {}
    for case in CASES:
        full = acquisition("brain-test", case, SLICES, 1e5, 2, Path("benchmarks/out/ct_dds"))
        for k in range(SLICES // CHUNK):
            key = f"{nominal(case)}, chunk {k}"
            row = cached(rows_dir(scratch, card["sha256"]) / f"{slug(key)}.json",
                         lambda c=full, n=k: score(chunk(c, n)))
            rows[key] = {"z_mm": [Z_FIRST_MM + k * CHUNK, Z_FIRST_MM + (k + 1) * CHUNK - 1], **row}
            log(f"{key}: DDS {row['psnr']:.2f} dB, ADMM-TV {row['admm_psnr']:.2f} dB, residual "
                f"{row.get('residual_network_max', float('nan')):.2f}, disagreement {row['disagreement']:.3f}")
    limits = thresholds_of(judge, rows[next(iter(rows))]["sampler"])
    if limits is None:
        raise SystemExit(f"{MODEL_ID}'s card has no thresholds for the sampler these rows ran with; clear {scratch}")
    for row in rows.values():
        row["reasons"] = limits.reasons(row)
        row["flagged"] = bool(row["reasons"])
    worse = [r for r in rows.values() if r["admm_psnr"] > r["psnr"]]
    out = {"command": "OMP_NUM_THREADS=2 PYTHONPATH=. python " + " ".join(sys.argv),
           "machine": f"{os.cpu_count()} cores, torch {torch.__version__}", "model_id": MODEL_ID,
           "sha256": card["sha256"], "thresholds": limits.to_dict(), "calibrated_on": judge["ood"]["calibrated_on"],
           "flag_rate": statistics.fmean(float(r["flagged"]) for r in rows.values()), "volumes": len(rows),
           "admm_tv_better": len(worse), "admm_tv_better_flagged": sum(r["flagged"] for r in worse), "rows": rows}
    log(f"flagged {sum(r['flagged'] for r in rows.values())} of {len(rows)}; ADMM-TV better on {len(worse)}, "
        f"{out['admm_tv_better_flagged']} of them flagged")
    if args.write_card:
        card["ood"]["false_flag_rate"].update({"whole test slab": out["flag_rate"],
                                               "whole test slab volumes": out["volumes"]})
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
