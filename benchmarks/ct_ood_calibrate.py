"""Calibrating DDS's out-of-distribution flag (CT), and checking it where it must fire.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/ct_ood_calibrate.py [--write-card]

DDS with the shipped CT prior (``ct-prior-brain-sim``, the method's defaults on the ONNX engine, the service's
``ct-dds``) reconstructs the central ``SLICES`` slices of

* the calibration slabs, the only volumes the thresholds see (``CALIBRATION_SLABS``, ``--calibration-slabs``): the
  prior's tuning slab (``brain-tuning``, inside its training range) and the two gaps between the training ranges and
  the test slab (``brain-gap-low``, z 1..9 mm, and ``brain-gap-high``, z 74..82 mm), each with its own noise seed;
  by default all three (``DEFAULT_CALIBRATION``);
* its held-out test slab (``brain-test``, noise seed 2), where the flag should stay quiet: the false-flag rate;
* unfamiliar data, unlike anything the prior saw, where every DDS volume must be at least as good as the report's
  own baseline (3D ADMM-TV at its defaults) or flagged: a real chest CT series (``lung2`` of
  ``benchmarks/ct_lung_series.py``, the test series of ``ct_dds.py``), noise-free random ellipsoids and a noisy
  Shepp-Logan phantom (piecewise-constant: TV's ideal case), and pydicom's one real CT slice.

Acquisitions (``GRID``): parallel beam, 128 x 128, I0 1e5, at 2, 3, 4, 6, 8, 12 and 16 views over 180 degrees, 60
views over 120 degrees and 45 over 90, and at 8 views with I0 3e4 and 3e5; the unfamiliar volumes at 8, 4 and 2
views and the 120-degree arc (the phantoms and the CT slice at 8 views).

The calibration slabs are scored at every acquisition on their central slices, and the tuning slab also whole, in
``CHUNK``-slice volumes at the issue's four cases (``SLAB_CASES``), as ``ct_ood_heldout_slab.py`` scores the test
slab. The report (``pipelines.confidence_ct``) gives each volume's largest per-slice residual over the noise level
and its disagreement with ADMM-TV. The thresholds (``pipelines.confidence.calibrate``, ``residual_by_acceleration``)
sit on polylines over the angular undersampling, one point per ``nominal`` group (one per kind of acquisition: views
and arc) at the group's mean undersampling: the margin x the group's largest disagreement, and the margin x the
largest residual of the group and of every group less undersampled. The margin is the smallest of ``MARGINS`` at
which each calibration slab, judged by thresholds from the others alone, is flagged at most ``FALSE_FLAG_AIM`` of
the time, pooled (``margin_search`` in the results). The pixel sizes the prior learned come from its card and its
training's random scaling (``pipelines.confidence_ct.training_pixel_range``), not from these volumes.
``--write-card`` stores the thresholds in the prior's card (``"ood"``, with the sampler settings they hold for),
which is where the service reads them.
Rows are cached under ``--scratch``; results: results/ct_ood_calibrate.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.ct_dds import PHANTOM_SLICES, SERIES, acquisition, axial, cached, log, real_ct_slice, slug
from benchmarks.ct_lung_series import lung_series
from pipelines.confidence import FlagThresholds, calibrate
from pipelines.confidence_ct import training_pixel_range
from pipelines.data import CTAcquisition
from pipelines.pipeline import reconstruct
from pipelines.zoo import ZOO_DIR

MODEL_ID = "ct-prior-brain-sim"
CALIBRATION_SLABS = {"brain-tuning": 1, "brain-gap-low": 3, "brain-gap-high": 4}  # slab: its noise seed
DEFAULT_CALIBRATION = ("brain-tuning", "brain-gap-low", "brain-gap-high")
"""The slabs the shipped thresholds come from: every validation slab, as for the MRI networks. Calibrated without
``brain-gap-high``, the top of the head, the thresholds flagged 3 of its 11 volumes when it was left out, and 4 of
the held-out test slab's 32 eight-slice volumes, all at its top (``results/ct_ood_calibrate_two_slabs.json``,
``results/ct_ood_heldout_slab_two_slabs.json``, both with the cold start that was the default then): DDS fits its
data worst at the top of the head, at 2 to 4 views. With it, the cold start's residual limit was about twice as
high. The warm start (the default since) fits the data more closely everywhere, and its limit is lower again."""
MARGINS = tuple(round(1.1 + 0.1 * k, 1) for k in range(10))  # 1.1 .. 2.0
FALSE_FLAG_AIM = 0.05
"""The margin is the smallest of ``MARGINS`` at which the calibration slabs, each judged by thresholds from the
others alone (leave one slab out), are flagged at most ``FALSE_FLAG_AIM`` of the time, pooled: a false-flag rate
estimated from validation data only, for volumes unlike those the limits came from, as the test slab is (its
anatomy lies between the training ranges). 1.1, the margin of the MRI flags, flagged 17 of the 65 calibration
volumes this way, and 2 of the test slab's 32."""
SLICES = 8
I0 = 1e5
GRID = [*({"views": v, "arc": None, "i0": I0} for v in (2, 3, 4, 6, 8, 12, 16)),
        {"views": 60, "arc": 120.0, "i0": I0}, {"views": 45, "arc": 90.0, "i0": I0},
        {"views": 8, "arc": None, "i0": 3e4}, {"views": 8, "arc": None, "i0": 3e5}]
UNFAMILIAR_GRID = [g for g in GRID[:8] if g["views"] in (8, 4, 2) or g["arc"] == 120.0]
SLAB_CASES = ({"views": 8, "arc": None}, {"views": 4, "arc": None}, {"views": 2, "arc": None},
              {"views": 60, "arc": 120.0})
"""The issue's cases, at which the whole tuning slab is scored in ``CHUNK``-slice volumes beside its central
slices, as ``ct_ood_heldout_slab.py`` scores the whole test slab."""
CHUNK, SLAB_SLICES = 8, 64


def nominal(case: dict[str, Any]) -> str:
    """The calibration group: one per kind of acquisition (views and arc; the photon counts share theirs)."""
    return f"{case['views']} views" + (f" over {case['arc']:g} degrees" if case["arc"] is not None else "")


def label(case: dict[str, Any]) -> str:
    arc = f"-arc{case['arc']:g}" if case["arc"] is not None else ""
    return f"{case['views']}v{arc}-i0{case['i0']:g}"


def rows_dir(scratch: Path, sha256: str) -> Path:
    """Where the rows of these weights at the method's current default sampler settings are cached: a change of
    the defaults (or the weights) starts a fresh cache instead of mixing settings."""
    from pipelines.methods.dds import DDSParams, sampler_record

    sampler = json.dumps(sampler_record(DDSParams()), sort_keys=True)
    return scratch / "rows" / f"{sha256[:12]}-{hashlib.sha256(sampler.encode()).hexdigest()[:8]}"


def score(acq: CTAcquisition) -> dict[str, Any]:
    """DDS at its defaults with its report, and the report's baseline scored beside it."""
    dds = reconstruct(acq, "dds", {"engine": "onnx"}).volume
    baseline = reconstruct(acq, "admm-tv", None).volume
    report = dds.attrs["consistency_report"]
    p, s = axial(acq, dds.data)
    bp, bs = axial(acq, baseline.data)
    row = {"psnr": p, "ssim": s, "admm_psnr": bp, "admm_ssim": bs, "sampler": report["sampler"]}
    for key in ("residual_network", "residual_network_max", "residual_unjudged", "disagreement", "baseline",
                "acceleration", "pixel_mm"):
        if key in report:
            row[key] = report[key]
    return row


def chunk(full: CTAcquisition, k: int) -> CTAcquisition:
    """Slices ``k * CHUNK`` to ``(k + 1) * CHUNK`` of ``full``, with their own affine."""
    part = slice(k * CHUNK, (k + 1) * CHUNK)
    affine = full.affine.copy()
    affine[:3, 3] += affine[:3, 2] * k * CHUNK
    return CTAcquisition(full.sinogram[part], full.angles, full.geometry, full.reference[part], affine,
                         dict(full.attrs), full.source)


def inputs(scratch: Path, series_data: str) -> dict[str, tuple[str, Any, dict[str, Any]]]:
    """``{key: (set, acquisition maker, acquisition case or {})}`` for every volume scored."""
    out: dict[str, tuple[str, Any, dict[str, Any]]] = {}
    slabs = [("calibration", source, seed) for source, seed in CALIBRATION_SLABS.items()]
    for case in GRID:
        for name, source, seed in (*slabs, ("held-out", "brain-test", 2)):
            out[f"{name}/{source}/{label(case)}"] = (
                name, lambda c=case, s=source, n=seed: acquisition(s, c, SLICES, c["i0"], n, scratch), case)
    for case in SLAB_CASES:  # the whole tuning slab in chunks, as the held-out test slab is scored
        full = {**case, "i0": I0}
        for k in range(SLAB_SLICES // CHUNK):
            out[f"calibration/brain-tuning/{label(full)}/chunk {k}"] = (
                "calibration", lambda c=full, n=k: chunk(acquisition("brain-tuning", c, SLAB_SLICES, I0,
                                                                     CALIBRATION_SLABS["brain-tuning"], scratch), n),
                full)
    chest = lung_series(series_data)[SERIES["test"]]
    for case in UNFAMILIAR_GRID:
        out[f"unfamiliar/chest-{SERIES['test']}/{label(case)}"] = (
            "unfamiliar", lambda c=case: acquisition(str(chest), c, SLICES, c["i0"], 2, scratch), {})
    eight = {"views": 8, "arc": None}
    out["unfamiliar/ellipsoids/8v-noise-free"] = (
        "unfamiliar", lambda: acquisition("ellipsoids", eight, PHANTOM_SLICES, None, 21, scratch), {})
    out["unfamiliar/shepp-logan/8v-i01e+05"] = (
        "unfamiliar", lambda: acquisition("shepp-logan", {**eight, "i0": I0}, SLICES, I0, 5, scratch), {})
    out["unfamiliar/pydicom-CT_small/8v-i01e+05"] = ("unfamiliar", lambda: real_ct_slice(scratch, I0), {})
    return out


def slab(key: str) -> str:
    return key.split("/")[1]


def thresholds_from(rows: dict[str, dict[str, Any]], slabs: list[str], margin: float,
                    pixel_mm: tuple[float, float]) -> FlagThresholds:
    """The thresholds that the calibration ``rows`` of ``slabs`` give at ``margin``."""
    return calibrate([r for k, r in rows.items() if r["set"] == "calibration" and slab(k) in slabs], margin,
                     pixel_mm, residual_by_acceleration=True)


def by_the_others(rows: dict[str, dict[str, Any]], chosen: list[str], margin: float,
                  pixel_mm: tuple[float, float]) -> dict[str, list[int]]:
    """``{slab: [flagged, volumes]}``: each of the ``chosen`` calibration slabs judged by the thresholds of the
    others at ``margin``."""
    out = {}
    for name in chosen if len(chosen) > 1 else ():
        theirs = thresholds_from(rows, [c for c in chosen if c != name], margin, pixel_mm)
        judged_rows = [r for k, r in rows.items() if slab(k) == name]
        out[name] = [sum(bool(theirs.reasons(r)) for r in judged_rows), len(judged_rows)]
    return out


def pooled(counts: dict[str, list[int]]) -> float:
    return sum(f for f, _ in counts.values()) / max(sum(n for _, n in counts.values()), 1)


def choose_margin(rows: dict[str, dict[str, Any]], chosen: list[str], pixel_mm: tuple[float, float]
                  ) -> tuple[float, dict[float, dict[str, list[int]]]]:
    """The smallest of ``MARGINS`` whose leave-one-slab-out flags, pooled, are at most ``FALSE_FLAG_AIM`` (else the
    largest), and the counts at every margin."""
    search = {m: by_the_others(rows, chosen, m, pixel_mm) for m in MARGINS}
    return next((m for m in MARGINS if pooled(search[m]) <= FALSE_FLAG_AIM), MARGINS[-1]), search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-card", action="store_true", help=f"store the thresholds in {MODEL_ID}'s card")
    parser.add_argument("--series-data", default="data/ct-lung")
    parser.add_argument("--scratch", default="benchmarks/out/ct_ood")
    parser.add_argument("--out", default="benchmarks/results/ct_ood_calibrate.json")
    parser.add_argument("--calibration-slabs", default=",".join(DEFAULT_CALIBRATION),
                        help=f"the slabs the thresholds are calibrated on, some of {', '.join(CALIBRATION_SLABS)} "
                             "(the others are still scored, and their flag rate reported)")
    args = parser.parse_args()
    chosen = args.calibration_slabs.split(",")
    if unknown := sorted(set(chosen) - set(CALIBRATION_SLABS)):
        parser.error(f"--calibration-slabs: unknown {', '.join(unknown)}; choose from {', '.join(CALIBRATION_SLABS)}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    scratch = Path(args.scratch)
    card_path = ZOO_DIR / MODEL_ID / "card.json"
    card = json.loads(card_path.read_text())

    rows: dict[str, dict[str, Any]] = {}
    for key, (group, make, case) in inputs(scratch, args.series_data).items():
        rows[key] = cached(rows_dir(scratch, card["sha256"]) / f"{slug(key)}.json", lambda m=make: score(m()))
        rows[key]["set"] = group
        if group != "unfamiliar":
            rows[key]["nominal"] = nominal(case)
        log(f"{key}: DDS {rows[key]['psnr']:.2f} dB, ADMM-TV {rows[key]['admm_psnr']:.2f} dB, disagreement "
            f"{rows[key]['disagreement']:.3f}, residual {rows[key].get('residual_network_max', float('nan')):.2f}")
    samplers = {json.dumps(r["sampler"], sort_keys=True) for r in rows.values()}
    if len(samplers) != 1:
        raise SystemExit(f"rows ran with different sampler settings {sorted(samplers)}; clear "
                         f"{rows_dir(scratch, card['sha256'])}")

    pixel_mm = training_pixel_range(card)
    margin, search = choose_margin(rows, chosen, pixel_mm)
    log(f"margin {margin}: leave-one-slab-out flags {({m: pooled(c) for m, c in search.items()})}")
    limits = thresholds_from(rows, chosen, margin, pixel_mm)
    cross = {name: f / n for name, (f, n) in search[margin].items()}
    for row in rows.values():
        row["flagged"] = bool(limits.reasons(row))
    held_out = [r["flagged"] for r in rows.values() if r["set"] == "held-out"]
    left_out = {name: statistics.fmean(float(r["flagged"]) for k, r in rows.items() if slab(k) == name)
                for name in CALIBRATION_SLABS if name not in chosen}
    baseline_better = {name: sum(r["admm_psnr"] > r["psnr"] for k, r in rows.items() if slab(k) == name)
                       for name in CALIBRATION_SLABS}
    unfamiliar = {k: r for k, r in rows.items() if r["set"] == "unfamiliar"}
    covered = all(r["flagged"] or r["psnr"] >= r["admm_psnr"] for r in unfamiliar.values())
    false_flags = {"held-out": statistics.fmean(float(f) for f in held_out), "held-out volumes": len(held_out)}
    log(f"thresholds {limits.to_dict()}; false flags {false_flags}; flag rate of the slabs left out {left_out}; "
        f"of each calibration slab by the others' thresholds {cross}; "
        f"unfamiliar data flagged or at least ADMM-TV: {covered}")
    for key, row in unfamiliar.items():
        log(f"  {key}: flagged {row['flagged']}")
    command = "OMP_NUM_THREADS=2 PYTHONPATH=. python " + " ".join(sys.argv)
    calibrated_on = (f"{', '.join(chosen)}: central {SLICES} slices, {len(GRID)} acquisitions each "
                     f"(benchmarks/ct_ood_calibrate.py GRID), and the whole tuning slab in {CHUNK}-slice volumes at "
                     f"{len(SLAB_CASES)} (SLAB_CASES): {margin} x the largest disagreement of each nominal group, "
                     f"{margin} x the largest residual of each group and of the groups less undersampled; the margin "
                     f"the smallest at which each slab judged by the others is flagged at most {FALSE_FLAG_AIM:.0%} "
                     "(pooled)")
    if args.write_card:
        card["ood"] = {"thresholds": limits.to_dict(), "margin": margin, "calibrated_on": calibrated_on,
                       "false_flag_rate": false_flags, "unfamiliar_flagged_or_at_least_baseline": covered,
                       "command": command, "sampler": json.loads(samplers.pop()), "engine": "onnx"}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": command, "model_id": MODEL_ID, "sha256": card["sha256"], "margin": margin,
        "margin_search": {"aim": FALSE_FLAG_AIM, "flagged_by_the_others": {str(m): c for m, c in search.items()}},
        "calibration_slabs": chosen, "calibrated_on": calibrated_on, "thresholds": limits.to_dict(),
        "false_flag_rate": false_flags, "flag_rate_calibration_slabs_left_out": left_out,
        "flag_rate_each_calibration_slab_by_the_others": cross,
        "acquisitions_where_admm_tv_beats_dds": baseline_better, "unfamiliar_flagged_or_at_least_baseline": covered,
        "grid": GRID, "machine": f"{os.cpu_count()} cores, torch {torch.__version__}",
        "rows": rows}, indent=1) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
