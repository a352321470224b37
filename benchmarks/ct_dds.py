"""DDS with the shipped CT prior against ADMM-TV 3D and FBP, on the prior's held-out test slab.

Protocol (benchmarks/README.md). Data: ``simulate_ct_dataset`` sources ``brain-tuning`` (tuning) and
``brain-test`` (held out: MNI z 10..73 mm, which no training slice of ``ct-prior-brain-sim`` came within 1 mm
of), 128 x 128 at 2 mm, slices 1 mm apart, parallel beam, Poisson noise at I0 ``--i0`` (noise seeds differ
between the sets). Cases: 8, 4 and 2 views over 180 degrees, and ``--arc-views`` views over a 120-degree arc;
and, reported beside them, TV's ideal case: noise-free random ellipsoids at 8 views (``PHANTOM_CASE``, its own
tuning and test volumes).

Out of distribution, the same four cases on a DICOM CT series of real anatomy the prior never saw: chest CT of two
patients (``SERIES``), tuned on one and scored on the other.

Tuning, on the central ``--tune-slices`` slices of the tuning slab, each setting chosen by mean axial PSNR
(ties within 0.1 dB broken by SSIM):
* FBP: its 5 filters, per case;
* ADMM-TV 3D: lam = lam_z over 6 scale-free values (rho and iterations as the method's tuned settings), per case;
* DDS (50 steps, ONNX engine): the method's defaults, which choose rho, CG iterations and eta by the acquisition
  (``pipelines/methods/dds.py`` ``REGIMES``); those were chosen on the same tuning slab by
  ``benchmarks/dds_gpu_tuned.py`` (results in ``benchmarks/results/dds_gpu_tuned.json``), and the warm start from
  ADMM-TV (``WARM_START``) by ``benchmarks/dds_warm_start.py`` (``results/dds_warm_start.json``); beside them the
  paper's cold start (``COLD_ROW``).
Scoring on the whole test slab: PSNR and SSIM (``pipelines.metrics``) averaged over the axial, coronal and
sagittal planes that cut the head (reference max above half of water's attenuation); ADMM-TV also at its
noise-adaptive default (lam null); times are whole-volume wall clock. Writes ``--json``.

    PYTHONPATH=. python benchmarks/ct_dds.py
    PYTHONPATH=. python benchmarks/ct_dds.py --recompute dds   # only the DDS rows; the others kept from --json
    PYTHONPATH=. python benchmarks/ct_dds.py --markdown benchmarks/results/ct_dds.json   # the tables
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.ct_lung_series import lung_series
from pipelines.ct_units import MU_WATER
from pipelines.data import CTAcquisition
from pipelines.io.sinogram import read_sinogram
from pipelines.metrics import psnr, ssim
from pipelines.pipeline import reconstruct
from pipelines.simulate.ct import simulate_ct_dataset

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
ADMM_LAMS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def cases(arc_views: int) -> list[dict[str, Any]]:
    brain = [{"name": "8 views", "views": 8, "arc": None, "regime": "sparse"},
             {"name": "4 views", "views": 4, "arc": None, "regime": "sparse"},
             {"name": "2 views", "views": 2, "arc": None, "regime": "sparse"},
             {"name": f"120-degree arc, {arc_views} views", "views": arc_views, "arc": 120.0, "regime": "limited"}]
    series = [{**case, "name": f"{case['name']}, chest CT series", "series": True} for case in brain]
    return [*brain, PHANTOM_CASE, *series]


PHANTOM_CASE = {"name": "8 views, random ellipsoids (noise-free)", "views": 8, "arc": None, "regime": "sparse",
                "phantom": True}
"""TV's ideal case, reported beside the anatomy (the issue judges on anatomy): piecewise-constant random
ellipsoids, 32 slices of 128 x 128, no noise; tuning volume ``random_ellipsoids(11)``, test ``(21)``."""
PHANTOM_SLICES = 32
PHANTOM_SEEDS = {"tuning": 11, "test": 21}


def acquisition(source: str, case: dict, slices: int, i0: float | None, seed: int, scratch: Path) -> CTAcquisition:
    """The case's sinogram of ``source`` (cached under ``scratch``); for ellipsoids the first of its volumes."""
    out = scratch / f"{Path(source).name}-{case['views']}-{case['arc']}-{slices}-{i0}-{seed}"
    if not any(out.glob("*.h5")):
        simulate_ct_dataset(out, views=case["views"], arc_deg=case["arc"], source=source, size=128, slices=slices,
                            noise_i0=i0, seed=seed)
    return read_sinogram(sorted(out.glob("*.h5"))[0])


def real_ct_slice(scratch: Path, i0: float) -> CTAcquisition:
    """pydicom's one real CT slice (``CT_small.dcm``, 128 x 128 at 0.66 mm) at 8 views, noise seed 3 (cached
    under ``scratch``)."""
    from pydicom.data import get_testdata_file

    out = scratch / "dicom-ct-small"
    if not (out / "CT_small.h5").exists():
        simulate_ct_dataset(out, views=8, source=get_testdata_file("CT_small.dcm"), size=128, slices=1, noise_i0=i0,
                            seed=3)
    return read_sinogram(out / "CT_small.h5")


COLD_ROW = ("dds (cold start)", "dds", {"engine": "onnx", "start": 1.0})
EXTRA_ROWS = {"8 views": (("dds (cold start, 100 steps)", "dds", {"engine": "onnx", "steps": 100, "start": 1.0}),)}
"""Beside the defaults (warm-started from ADMM-TV, ``pipelines.methods.dds.WARM_START``): every case also runs
``COLD_ROW``, the paper's start from pure noise (the defaults before the warm start), and 8 views that at twice
the paper's steps, to show what more steps buy (not a tuned setting)."""


def case_acquisitions(case: dict, args: argparse.Namespace, scratch: Path) -> tuple[CTAcquisition, CTAcquisition]:
    """(tuning, test) acquisitions of a case: the brain slabs, two ellipsoid volumes for the phantom case, or two
    patients' chest CT series (``SERIES``)."""
    if case.get("phantom"):
        return (acquisition("ellipsoids", case, PHANTOM_SLICES, None, PHANTOM_SEEDS["tuning"], scratch),
                acquisition("ellipsoids", case, PHANTOM_SLICES, None, PHANTOM_SEEDS["test"], scratch))
    if case.get("series"):
        folders = lung_series(args.series_data)
        return (acquisition(str(folders[SERIES["tuning"]]), case, args.tune_slices, args.i0, 1, scratch),
                acquisition(str(folders[SERIES["test"]]), case, SERIES_TEST_SLICES, args.i0, 2, scratch))
    return (acquisition("brain-tuning", case, args.tune_slices, args.i0, 1, scratch),
            acquisition("brain-test", case, args.test_slices, args.i0, 2, scratch))


SERIES = {"tuning": "lung1", "test": "lung2"}
"""The out-of-distribution DICOM CT series (``benchmarks/ct_lung_series.py``): two patients' chest CT, read by
``pipelines.io.dicom_ct`` and resampled to 128 x 128 over their 292 / 321 mm field of view (2.3 / 2.5 mm pixels),
slices 5 mm apart; tuning on ``lung1``'s central ``--tune-slices`` slices, scoring on all of ``lung2``'s."""
SERIES_TEST_SLICES = 61


def plane_scores(ref: np.ndarray, x: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM over axial (z), coronal (y) and sagittal (x) planes that cut the head."""
    out = {}
    for name, axis in (("axial", 0), ("coronal", 1), ("sagittal", 2)):
        refs, xs = np.moveaxis(ref, axis, 0), np.moveaxis(x, axis, 0)
        keep = [k for k in range(refs.shape[0]) if refs[k].max() > 0.5 * MU_WATER]
        out[name] = {"psnr": float(np.mean([psnr(refs[k], xs[k]) for k in keep])),
                     "ssim": float(np.mean([ssim(refs[k], xs[k]) for k in keep])), "planes": len(keep)}
    return out


def axial(acq: CTAcquisition, x: np.ndarray) -> tuple[float, float]:
    """Mean PSNR/SSIM over the axial slices that cut the head (works for a one-slice volume too)."""
    ref = acq.reference
    keep = [k for k in range(ref.shape[0]) if ref[k].max() > 0.5 * MU_WATER]
    return (float(np.mean([psnr(ref[k], x[k]) for k in keep])), float(np.mean([ssim(ref[k], x[k]) for k in keep])))


def best(rows: list[dict]) -> dict:
    top = max(r["psnr"] for r in rows)
    return max((r for r in rows if r["psnr"] >= top - 0.1), key=lambda r: r["ssim"])


def run(acq: CTAcquisition, method: str, params: dict, progress=None) -> tuple[np.ndarray, float, dict]:
    t0 = time.perf_counter()
    volume = reconstruct(acq, method, params, progress=progress).volume
    return volume.data, time.perf_counter() - t0, volume.attrs.get("chosen", {})


def scored_row(test: CTAcquisition, method: str, params: dict) -> dict:
    """A table row: the method's seconds and plane scores on ``test``, and for DDS the settings it chose."""
    x, sec, chosen = run(test, method, params)
    row = {"params": params, "seconds": round(sec, 2), **plane_scores(test.reference, x)}
    if method == "dds":
        row["chosen"] = {k: chosen[k] for k in ("regime", "rho", "lam", "cg_iterations", "eta")}
    return row


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label).strip("-")


def cached(path: Path, compute):
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))
    return value


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def markdown(path: Path) -> str:
    """BENCHMARKS.md tables from the results file."""
    res = json.loads(Path(path).read_text())
    lines = ["| case | method | axial PSNR / SSIM | coronal PSNR / SSIM | sagittal PSNR / SSIM | seconds |",
             "|---|---|---:|---:|---:|---:|"]
    for case in res["cases"]:
        for label, row in case["rows"].items():
            cells = [f"{row[o]['psnr']:.2f} / {row[o]['ssim']:.3f}" for o in ("axial", "coronal", "sagittal")]
            name = f"**{label}**" if label.startswith("dds") else label
            lines.append(f"| {case['case']['name']} | {name} | {' | '.join(cells)} | {row['seconds']:.0f} |")
    dicom = res.get("dicom_out_of_distribution")
    if dicom:
        lines += ["", "| real CT slice (out of distribution) | PSNR / SSIM |", "|---|---:|"]
        lines += [f"| {label} | {row['psnr']:.2f} / {row['ssim']:.3f} |" for label, row in dicom["rows"].items()]
    return "\n".join(lines)


def main() -> None:
    if "--markdown" in sys.argv:
        print(markdown(Path(sys.argv[sys.argv.index("--markdown") + 1])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--i0", type=float, default=1e5)
    ap.add_argument("--arc-views", type=int, default=60)
    ap.add_argument("--tune-slices", type=int, default=8)
    ap.add_argument("--test-slices", type=int, default=64)
    ap.add_argument("--cases", default="all", help="comma-separated case indices (default all; the other cases "
                    "are kept from --json)")
    ap.add_argument("--series-data", default="data/ct-lung", help="folder of the chest CT series (written there "
                    "by benchmarks/ct_lung_series.py when missing)")
    ap.add_argument("--scratch", default="benchmarks/out/ct_dds")
    ap.add_argument("--json", default="benchmarks/results/ct_dds.json")
    ap.add_argument("--recompute", default="all", help="comma-separated methods (fbp, admm-tv, dds) whose rows are "
                    "computed; the other rows and the classical tuning of a case already in --json are kept (none: "
                    "only rows missing from --json are computed)")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    all_cases = cases(args.arc_views)
    chosen = all_cases if args.cases == "all" else [all_cases[int(k)] for k in args.cases.split(",")]

    command = "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv)
    earlier = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {"cases": []}
    kept = {c["case"]["name"]: c for c in earlier.get("cases", [])}
    recompute = set(args.recompute.split(",")) if args.recompute != "all" else None

    results = []
    for case in all_cases:
        stored = kept.get(case["name"])
        if case not in chosen:  # cases not asked for keep their earlier results
            if stored is not None:
                results.append({"command": earlier.get("command"), **stored})
            continue
        reuse = recompute is not None and stored is not None
        earlier_rows, tuning = (stored["rows"], stored["tuning"]) if reuse else ({}, None)
        rows = {}
        tune, test = case_acquisitions(case, args, scratch)

        def tune_classical(tune=tune, case=case) -> dict:
            fbp_rows, admm_rows = [], []
            for f in FILTERS:
                p, s = axial(tune, run(tune, "fbp", {"filter": f})[0])
                fbp_rows.append({"filter": f, "psnr": p, "ssim": s})
            for lam in ADMM_LAMS:
                p, s = axial(tune, run(tune, "admm-tv", {"lam": lam, "lam_z": lam})[0])
                admm_rows.append({"lam": lam, "psnr": p, "ssim": s})
            log(f"tuned classical {case['name']}")
            return {"fbp": fbp_rows, "admm_tv": admm_rows}

        if tuning is None:
            tuning = cached(scratch / f"tune-classical-{slug(case['name'])}.json", tune_classical)
        fbp_best, admm_best = best(tuning["fbp"]), best(tuning["admm_tv"])
        for label, method, params in (
                ("fbp (tuned filter)", "fbp", {"filter": fbp_best["filter"]}),
                ("admm-tv (default)", "admm-tv", {}),
                ("admm-tv (tuned lam)", "admm-tv", {"lam": admm_best["lam"], "lam_z": admm_best["lam"]}),
                ("dds (defaults)", "dds", {"engine": "onnx"}), COLD_ROW, *EXTRA_ROWS.get(case["name"], ())):
            kept_row = earlier_rows.get(label)
            if kept_row is not None and kept_row["params"] == params and method not in recompute:
                rows[label] = kept_row
                continue

            def score(test=test, method=method, params=params, label=label, case=case) -> dict:
                row = scored_row(test, method, params)
                log(f"{case['name']} {label}: {row}")
                return row

            rows[label] = cached(scratch / f"score-{slug(case['name'])}-{args.test_slices}-{slug(label)}.json", score)
        results.append({"command": command, "case": case, "tuning": tuning, "rows": rows})

    dicom = earlier.get("dicom_out_of_distribution")
    if all_cases[0] in chosen and results:  # out of distribution: a real CT slice, settings of 8 views
        first = results[0]
        acq = real_ct_slice(scratch, args.i0)

        earlier_dicom = (earlier.get("dicom_out_of_distribution") or {}).get("rows", {})

        dicom_cache = scratch / "score-dicom-defaults.json"
        cached_dicom = json.loads(dicom_cache.read_text()) if dicom_cache.is_file() else {}
        rows = {}
        for label, row in first["rows"].items():  # each row once: from the cache, or kept, or computed
            if label in cached_dicom:
                rows[label] = cached_dicom[label]
            elif recompute is not None and label.split()[0] not in recompute and label in earlier_dicom:
                rows[label] = earlier_dicom[label]
            else:
                x, sec, _ = run(acq, label.split()[0], row["params"])
                p, s_ = axial(acq, x)
                rows[label] = {"psnr": p, "ssim": s_, "seconds": round(sec, 2)}
                dicom_cache.write_text(json.dumps({**cached_dicom, **rows}, indent=1))
        dicom = {"data": "pydicom's CT_small.dcm (one real CT slice, 128 x 128 at 0.66 mm: another scale and "
                         "anatomy than the prior's 2 mm brain slices), 8 views, settings of the 8-view case",
                 "rows": rows}

    out = {
        "benchmark": "ct_dds",
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "model_id": "ct-prior-brain-sim",
        "data": {"tuning": f"brain-tuning slab, central {args.tune_slices} slices", "test":
                 f"brain-test slab, {args.test_slices} slices (held out from the prior's training)",
                 "size": 128, "pixel_mm": 2.0, "slice_mm": 1.0, "i0": args.i0,
                 "phantom": f"random ellipsoids, {PHANTOM_SLICES} x 128 x 128, noise-free: tuning volume seed "
                            f"{PHANTOM_SEEDS['tuning']}, test volume seed {PHANTOM_SEEDS['test']}",
                 "series": f"DICOM CT series of two patients' chest CT (pyradiomics 3.1.0 test data, "
                           f"benchmarks/ct_lung_series.py), read by pipelines.io.dicom_ct, 128 x 128 over the field "
                           f"of view, 5 mm slices, i0 as the brain: tuning {SERIES['tuning']} (central "
                           f"{args.tune_slices} slices), test {SERIES['test']} ({SERIES_TEST_SLICES} slices)"},
        "dds_settings": "the method's defaults (rho, CG iterations, eta by the acquisition: pipelines/methods/dds.py "
                        "REGIMES, chosen on the tuning slab by benchmarks/dds_gpu_tuned.py; the warm start from "
                        "ADMM-TV, WARM_START, chosen there by benchmarks/dds_warm_start.py); 'cold start': start 1, "
                        "the paper's start from pure noise",
        "cases": results,
        "dicom_out_of_distribution": dicom,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
