"""CT ADMM-TV's noise-adaptive weight (and SIRT's iteration count) tuned on one set, scored on another.

Protocol (benchmarks/README.md): settings are chosen on a tuning set and scored on a held-out set nothing was
tuned on; ADMM-TV's lam and SIRT's iteration count get grids of the same size on the same tuning cases, and each
gets the same kind of rule from its per-case optima.

Data: ``simulate_ct_dataset``, parallel beam over 180 degrees, ``--size`` x ``--size`` x ``--slices``, Poisson
noise at incident count I0 (or none). Tuning set: brain slab 1 and the first random-ellipsoid volume of seed 0
(noise seed 0) at ``--tune-views`` x ``--tune-i0``. Held-out set: brain slab 3 and the first random-ellipsoid
volume of seed 100 (noise seed 100) at ``--test-views`` x ``--test-i0``, other view counts and I0 inside the
tuning range.

Tuning. Per case: ADMM-TV 3D (rho, iterations from ``tuned_admm_settings``, lam_z = lam) over ``--lams`` and
SIRT snapshots at ``--sirt-iterations``; a grid walk stops 1.5 dB below its best once two points past it. The
per-case optimum is refined by a parabola in log10 through the best grid point and its neighbours. The rule
``log10 w = a + b log10(max(sigma_rel, floor)) + c log10(views)`` is fitted to the optima by least squares,
``floor`` picked from a grid by the residual (noise-free cases estimate sigma_rel = 0), where ``sigma_rel`` is
the noise the method estimates (``models.physics.ct.noise``: from the stated I0) over the sinogram's rms.

Held-out scores: FBP (ramp); SIRT at its default (100 iterations), at its fitted rule and its per-case best of the
grid; ADMM-TV as the method runs with lam left null (noise from the stated I0, and from the data alone with I0
removed) and its per-case best of the grid (an oracle, not a setting). PSNR/SSIM as ``pipelines.metrics``
(fastMRI definitions), mean and std over the held-out cases. Writes ``--json`` with the command.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ct_tune_admm.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classical.ct import ADMM_LAM_RULE, NoiseViewsRule, admm_tv_3d, fbp, sirt, tuned_admm_settings
from models.physics.ct.geometry import geometry_from_dict
from models.physics.ct.noise import estimate_noise, sinogram_scale, stated_i0
from models.physics.ct.projector import CTProjector
from pipelines.data import CTAcquisition
from pipelines.io.sinogram import read_sinogram
from pipelines.metrics import psnr, ssim
from pipelines.reconstructors import get
from pipelines.simulate.ct import simulate_ct_dataset

STOP_DB = 1.5          # a grid walk stops this far below its best ...
STOP_AFTER = 2         # ... once this many points past it
FLOORS = 10.0 ** np.linspace(-4.0, -1.0, 31)
SIRT_DEFAULT = 100


@dataclasses.dataclass(frozen=True)
class Case:
    volume: str        # "brain-01", "ellipsoids-01", ...
    source: str
    seed: int
    index: int         # which of the simulated volumes
    views: int
    i0: float | None

    @property
    def name(self) -> str:
        noise = f"I0-{self.i0:g}" if self.i0 else "noise-free"
        return f"{self.volume}/views-{self.views}/{noise}"


def cases(volumes: list[tuple[str, str, int, int]], views: list[int], i0s: list[float | None]) -> list[Case]:
    return [Case(v, s, seed, k, n, i0) for v, s, seed, k in volumes for n in views for i0 in i0s]


def load(case: Case, size: int, slices: int, scratch: Path) -> CTAcquisition:
    """Simulate the case's volumes (all of its source, as the simulator writes them) and read the one asked for."""
    out = scratch / f"{case.source}-s{case.seed}-v{case.views}-{case.i0 or 0:g}-{size}x{slices}"
    paths = sorted(out.glob("*.h5")) if out.exists() else []
    if not paths:
        paths = simulate_ct_dataset(out, case.views, source=case.source, size=size, slices=slices,
                                    noise_i0=case.i0, seed=case.seed)
    return read_sinogram(sorted(paths)[case.index])


def scores(ref: np.ndarray, x: torch.Tensor | np.ndarray) -> dict[str, float]:
    arr = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return {"psnr": round(psnr(ref, arr), 3), "ssim": round(ssim(ref, arr), 4)}


def relative_noise(acq: CTAcquisition) -> tuple[float, str]:
    """The noise the method estimates, over the sinogram's rms."""
    est = estimate_noise(acq.sinogram, stated_i0(acq.attrs))
    return est.sigma / sinogram_scale(acq.sinogram), est.source


def refine(grid: list[float], values: dict[float, float]) -> float:
    """log10 of the argmax: a parabola in log10 through the best grid point and its two neighbours when both were
    run, else the best grid point."""
    best = max(values, key=values.get)
    k = grid.index(best)
    if 0 < k < len(grid) - 1 and grid[k - 1] in values and grid[k + 1] in values:
        xs = np.log10([grid[k - 1], best, grid[k + 1]])
        ys = [values[grid[k - 1]], values[best], values[grid[k + 1]]]
        a, b, _ = np.polyfit(xs, ys, 2)
        if a < 0:
            return float(np.clip(-b / (2 * a), xs[0], xs[2]))
    return float(math.log10(best))


def admm_grid(y: torch.Tensor, op: CTProjector, ref: np.ndarray, views: int, lams: list[float]) -> dict[float, dict]:
    """ADMM-TV 3D over ``lams`` (ascending), stopping ``STOP_DB`` below the best ``STOP_AFTER`` points past it."""
    s = tuned_admm_settings(views)
    out: dict[float, dict] = {}
    best, since = -math.inf, 0
    for lam in lams:
        x = admm_tv_3d(y, op, lam=lam, lam_z=lam, rho=s.rho, iterations=s.iterations, cg_iterations=s.cg_iterations)
        out[lam] = scores(ref, x)
        since = 0 if out[lam]["psnr"] > best else since + 1
        best = max(best, out[lam]["psnr"])
        if since >= STOP_AFTER and out[lam]["psnr"] < best - STOP_DB:
            break
    return out


def sirt_snapshots(y: torch.Tensor, op: CTProjector, ref: np.ndarray, counts: list[int]) -> dict[int, dict]:
    """SIRT continued from its last iterate, scored at each count of ``counts``."""
    out: dict[int, dict] = {}
    x, done = None, 0
    for n in sorted(set(counts)):
        x = sirt(y, op, iterations=n - done, x0=x)
        done = n
        out[n] = scores(ref, x)
    return out


def fit_rule(points: list[tuple[float, int, float]], views_range: tuple[int, int]) -> tuple[NoiseViewsRule, float]:
    """Least-squares ``log10 w = a + b log10(max(s, floor)) + c log10(views)`` over ``(s, views, log10 w)``, the
    floor picked from ``FLOORS`` by the residual. Returns the rule and its rms residual (log10 units)."""
    best: tuple[float, NoiseViewsRule] | None = None
    target = np.array([p[2] for p in points])
    for floor in FLOORS:
        design = np.array([[1.0, math.log10(max(s, floor)), math.log10(v)] for s, v, _ in points])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        rms = float(np.sqrt(np.mean((design @ coef - target) ** 2)))
        if best is None or rms < best[0] - 1e-9:
            best = (rms, NoiseViewsRule(round(float(coef[0]), 3), round(float(coef[1]), 3), round(float(coef[2]), 3),
                                        float(f"{floor:.2g}"), views_range))
    assert best is not None
    return best[1], best[0]


def tune(args: argparse.Namespace) -> dict[str, Any]:
    volumes = [("brain-01", "brain", 0, 0), ("ellipsoids-01", "ellipsoids", 0, 0)]
    rows = []
    for case in cases(volumes, args.tune_views, args.tune_i0):
        t0 = time.perf_counter()
        acq = load(case, args.size, args.slices, args.scratch)
        op = CTProjector(geometry_from_dict(acq.geometry, acq.angles))
        y, ref = torch.from_numpy(acq.sinogram), acq.reference
        sigma_rel, source = relative_noise(acq)
        tv = admm_grid(y, op, ref, case.views, args.lams)
        it = sirt_snapshots(y, op, ref, args.sirt_iterations)
        row = {"case": case.name, "views": case.views, "i0": case.i0, "sigma_rel": sigma_rel, "noise_source": source,
               "admm_best_lam": 10 ** refine(args.lams, {k: v["psnr"] for k, v in tv.items()}),
               "admm_psnr": {f"{k:g}": v["psnr"] for k, v in tv.items()},
               "sirt_best_iterations": 10 ** refine(args.sirt_iterations, {k: v["psnr"] for k, v in it.items()}),
               "sirt_psnr": {str(k): v["psnr"] for k, v in it.items()}, "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"tune {case.name}: sigma_rel {sigma_rel:.2e}, ADMM best lam {row['admm_best_lam']:.2e} "
              f"({max(row['admm_psnr'].values()):.2f} dB), SIRT best {row['sirt_best_iterations']:.0f} it "
              f"({max(row['sirt_psnr'].values()):.2f} dB), {row['seconds']} s", flush=True)
    views_range = (min(args.tune_views), max(args.tune_views))
    lam_rule, lam_rms = fit_rule([(r["sigma_rel"], r["views"], math.log10(r["admm_best_lam"])) for r in rows],
                                 views_range)
    sirt_rule, sirt_rms = fit_rule([(r["sigma_rel"], r["views"], math.log10(r["sirt_best_iterations"]))
                                    for r in rows], views_range)
    print(f"ADMM-TV rule: {lam_rule.formula()} (rms residual {lam_rms:.3f} decades)", flush=True)
    print(f"SIRT rule: {sirt_rule.formula('iterations')} (rms residual {sirt_rms:.3f} decades)", flush=True)
    return {"cases": rows, "admm_rule": rule_dict(lam_rule, lam_rms, "lam"),
            "sirt_rule": rule_dict(sirt_rule, sirt_rms, "iterations"), "_rules": (lam_rule, sirt_rule)}


def rule_dict(rule: NoiseViewsRule, rms: float, name: str) -> dict[str, Any]:
    return {"a": rule.a, "b": rule.b, "c": rule.c, "floor": rule.floor, "views_range": list(rule.views_range),
            "formula": rule.formula(name), "rms_residual_log10": round(rms, 4)}


def sirt_iterations(rule: NoiseViewsRule, views: int, sigma_rel: float) -> int:
    return int(min(max(round(rule(views, sigma_rel)), 1), 5000))


def held_out(args: argparse.Namespace, sirt_rule: NoiseViewsRule) -> dict[str, Any]:
    volumes = [("brain-03", "brain", 100, 2), ("ellipsoids-s100-01", "ellipsoids", 100, 0)]
    method = get("ct", "admm-tv")
    rows = []
    for case in cases(volumes, args.test_views, args.test_i0):
        t0 = time.perf_counter()
        acq = load(case, args.size, args.slices, args.scratch)
        geom = geometry_from_dict(acq.geometry, acq.angles)
        op = CTProjector(geom)
        y, ref = torch.from_numpy(acq.sinogram), acq.reference
        sigma_rel, _ = relative_noise(acq)
        n_sirt = sirt_iterations(sirt_rule, case.views, sigma_rel)
        it = sirt_snapshots(y, op, ref, [*args.sirt_iterations, SIRT_DEFAULT, n_sirt])
        stated = method.run(acq, method.check({}), None)
        blind_acq = dataclasses.replace(acq, attrs={k: v for k, v in acq.attrs.items() if k != "noise_i0"})
        blind = method.run(blind_acq, method.check({}), None)
        tv = admm_grid(y, op, ref, case.views, args.lams)
        best_lam = max(tv, key=lambda k: tv[k]["psnr"])
        best_it = max(args.sirt_iterations, key=lambda k: it[k]["psnr"])
        row = {"case": case.name, "views": case.views, "i0": case.i0, "sigma_rel": sigma_rel,
               "fbp": scores(ref, fbp(y, geom)),
               "sirt_default": {"iterations": SIRT_DEFAULT, **it[SIRT_DEFAULT]},
               "sirt_tuned": {"iterations": n_sirt, **it[n_sirt]},
               "sirt_best": {"iterations": best_it, **it[best_it]},
               "admm_tv_adaptive": {**scores(ref, stated.data), "chosen": stated.attrs["chosen"]},
               "admm_tv_adaptive_data_only": {**scores(ref, blind.data), "chosen": blind.attrs["chosen"]},
               "admm_tv_best": {"lam": best_lam, **tv[best_lam]}, "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"held-out {case.name}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in row.items()
                                                     if isinstance(v, dict) and "psnr" in v)
              + f" ({row['seconds']} s)", flush=True)
    keys = ["fbp", "sirt_default", "sirt_tuned", "sirt_best", "admm_tv_adaptive", "admm_tv_adaptive_data_only",
            "admm_tv_best"]
    summary = {k: {m: {"mean": round(float(np.mean([r[k][m] for r in rows])), 3 if m == "psnr" else 4),
                       "std": round(float(np.std([r[k][m] for r in rows])), 3 if m == "psnr" else 4)}
                   for m in ("psnr", "ssim")} for k in keys}
    return {"cases": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--tune-views", type=int, nargs="+", default=[10, 30, 60, 120])
    parser.add_argument("--tune-i0", type=lambda s: None if s == "none" else float(s), nargs="+",
                        default=[2e3, 1e4, 5e4, None])
    parser.add_argument("--test-views", type=int, nargs="+", default=[20, 45, 90])
    parser.add_argument("--test-i0", type=lambda s: None if s == "none" else float(s), nargs="+",
                        default=[4e3, 2e4, None])
    parser.add_argument("--lams", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    parser.add_argument("--sirt-iterations", type=int, nargs="+", default=[5, 10, 20, 50, 100, 200, 500, 1000])
    parser.add_argument("--tune-only", action="store_true", help="fit the rules and stop")
    parser.add_argument("--scratch", type=Path, default=Path("benchmarks/out/ct_tune_admm"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/ct_admm_tv.json"))
    args = parser.parse_args()
    if len(args.lams) != len(args.sirt_iterations):
        parser.error("ADMM-TV's and SIRT's grids must have the same size (the protocol)")
    args.lams, args.sirt_iterations = sorted(args.lams), sorted(args.sirt_iterations)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tuning = tune(args)
    lam_rule, sirt_rule = tuning.pop("_rules")
    result: dict[str, Any] = {
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=. python " + shlex.join(sys.argv),
        "protocol": "benchmarks/README.md: rules fitted on the tuning set, scored on the held-out set",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "settings": {"size": args.size, "slices": args.slices, "geometry": "parallel, 180 deg",
                     "admm": dataclasses.asdict(tuned_admm_settings(30)) | {"lam": "rule", "lam_z": "= lam"},
                     "lam_grid": args.lams, "sirt_grid": args.sirt_iterations,
                     "tuning": {"volumes": ["brain slab 1 (noise seed 0)", "ellipsoids seed 0, volume 1"],
                                "views": args.tune_views, "i0": args.tune_i0},
                     "held_out": {"volumes": ["brain slab 3 (noise seed 100)", "ellipsoids seed 100, volume 1"],
                                  "views": args.test_views, "i0": args.test_i0}},
        "tuning": tuning,
        "shipped_admm_rule": rule_dict(ADMM_LAM_RULE, float("nan"), "lam") | {"rms_residual_log10": None},
    }
    result["shipped_rule_is_the_fit"] = all(getattr(ADMM_LAM_RULE, k) == getattr(lam_rule, k)
                                           for k in ("a", "b", "c", "floor", "views_range"))
    if not args.tune_only:
        result["held_out"] = held_out(args, sirt_rule)
        for name, row in result["held_out"]["summary"].items():
            print(f"{name:28s} PSNR {row['psnr']['mean']:.2f} ± {row['psnr']['std']:.2f} dB, "
                  f"SSIM {row['ssim']['mean']:.4f} ± {row['ssim']['std']:.4f}", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if not result["shipped_rule_is_the_fit"]:
        print("note: the shipped ADMM_LAM_RULE (models/classical/ct.py) differs from this fit", flush=True)
    out = args.json if not args.tune_only else args.scratch / "tuning.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
