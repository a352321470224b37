"""Fit the noise-adaptive default weights of the classical MRI methods on the tuning cases only.

Run from the repository root::

    .venv/bin/python benchmarks/mri_tune_defaults.py --methods l1-wavelet cg-sense admm-tv-2d

For every case of ``benchmarks/mri_cases.TUNING`` (never a held-out one) and every weight on a log grid, the method
reconstructs the case (ESPIRiT maps estimated once per case, as the registry method does) and the volume PSNR
against the ground truth is recorded, with the acceleration its mask achieves (``R``; a random mask's nominal 4x
may sample 5x less) and the case's noise-to-signal ratio ``r = sigma / s``: ``sigma`` the noise
level the method estimates from the k-space (``models.physics.mri.noise``), ``s`` the bright-tissue intensity the
weights are relative to (the 99 % quantile of ``|A^H y|``, median over the slices). Each case's best weight is
refined by a parabola through the best grid point and its neighbours (in log weight); the rule
``log lam = c0 + c1 log r + c2 log R + c3 log(n / 256) + c4 log r log R`` (``R`` the acceleration, ``n`` the
matrix) is then fitted by least squares on the best weights and written with every row to
``benchmarks/results/mri_default_rule.json``. The constants go into ``models/classical/noise_rules.py`` by hand,
with the file named beside them.

``l1-wavelet`` is tuned jointly in (iterations, weight) (``--methods l1-wavelet``): for every case and every count
in ``ITERATIONS``, the weight is searched on a fixed log lattice (``LATTICE_STEP`` apart) by a walk that starts at
``START`` (a fixed rough rule, the l1-wavelet rule fitted before the iteration count was tuned) and moves until the
best weight is bracketed, so the result does not depend on the start when PSNR is unimodal in the weight. Each
case's best count is the one with the highest PSNR (at its refined best weight); the count rule
``log n = d0 + d1 log r + d2 log R`` is fitted on the log of those counts and rounded to the nearest count tried,
then the weight rule on each case's best weight at the count the count rule gives it. The losses are against each
case's best (count, weight) pair.

Grid evaluations are cached per case in ``data/mri-tune/`` so an interrupted run resumes; ``--workers`` runs cases
in parallel (one thread each).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mri_cases import ROOT, TUNING, Case, load_case  # noqa: E402

from models.classical.noise_rules import noise_to_signal  # noqa: E402
from models.physics.mri.noise import estimate_kspace_sigma  # noqa: E402
from models.physics.mri.sense import SenseOperator  # noqa: E402
from models.physics.shapes import center_crop  # noqa: E402
from pipelines.methods._mri import _maps_for  # noqa: E402
from pipelines.metrics import psnr  # noqa: E402
from pipelines.sampling import acquisition_mask, sampled_acceleration  # noqa: E402

CACHE = ROOT / "data" / "mri-tune"
OUT = ROOT / "benchmarks" / "results" / "mri_default_rule.json"

GRIDS = {
    "l1-wavelet": np.geomspace(1e-4, 1e-1, 13),
    "admm-tv-2d": np.geomspace(3e-4, 3e-2, 7),
    "cg-sense": np.geomspace(1e-4, 3.0, 16),
}
ITERATIONS = (30, 45, 60, 80)
LATTICE_STEP = 2 ** 0.5
LATTICE_BASE = 1e-4
START = {"c0": 3.2171, "c1": 2.0852, "c2": -2.4519, "c3": 0.4420, "c4": -0.4950}
EXTEND = 3  # a case whose best weight is the grid's largest gets up to this many larger ones, a step apart


def _solver(method: str, max_iter: int | None = None):
    from models.classical.l1_wavelet import l1_wavelet
    from models.classical.mri import admm_tv_sense, cg_sense

    if method == "l1-wavelet":
        if max_iter is not None:
            return lambda k, m, s, lam: l1_wavelet(k, m, s, lam=lam, max_iter=max_iter)
        return lambda k, m, s, lam: l1_wavelet(k, m, s, lam=lam)
    if method == "admm-tv-2d":
        return lambda k, m, s, lam: admm_tv_sense(k, m, s, lam=lam)
    if method == "cg-sense":
        return lambda k, m, s, lam: cg_sense(k, m, s, lam=lam, max_iter=50)
    raise ValueError(method)


def half_fraction(case: Case) -> bool:
    """The cases whose two-level factors (matrix, coils, mask, acceleration) have an even number of high levels."""
    high = (case.size > 128) + (case.coils > 4) + (case.mask == "equispaced") + (case.acceleration > 4)
    return high % 2 == 0


def case_inputs(case: Case) -> dict:
    acq = load_case(case)
    mask, num_low = acquisition_mask(acq)
    maps = torch.from_numpy(_maps_for(acq.kspace, num_low, "espirit"))
    kspace = torch.from_numpy(np.ascontiguousarray(acq.kspace))
    mask_t = torch.from_numpy(mask)
    sigma = estimate_kspace_sigma(acq.kspace, mask)
    aty = SenseOperator(maps, mask_t).adjoint(kspace)
    return {"acq": acq, "kspace": kspace, "mask": mask_t, "maps": maps, "sigma": sigma,
            "acceleration": sampled_acceleration(mask, acq.kspace.shape[-2:]),
            "r": noise_to_signal(sigma, aty)}


def sweep(case: Case, method: str, inputs: dict) -> tuple[np.ndarray, list[float]]:
    """The weights tried and their PSNR: the method's grid, extended upwards (same log step, at most ``EXTEND``
    more) while the best is the largest tried. Weights already scored are read back from the cache."""
    path = CACHE / method / f"{case.name}.json"
    done: dict[str, float] = {}
    if path.exists():
        cached = json.loads(path.read_text())
        done = cached.get("scores") or {repr(float(g)): p for g, p in zip(cached["grid"], cached["psnr"], strict=True)}
    solve = _solver(method)
    acq = inputs["acq"]

    def score(lam: float) -> float:
        if repr(lam) not in done:
            with torch.no_grad():
                image = solve(inputs["kspace"], inputs["mask"], inputs["maps"], lam)
            image = center_crop(image, acq.image_shape).numpy()
            done[repr(lam)] = psnr(acq.reference, np.abs(image))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"scores": done}))
        return done[repr(lam)]

    grid = [float(v) for v in GRIDS[method]]
    scores = [score(lam) for lam in grid]
    step = grid[-1] / grid[-2]
    for _ in range(EXTEND):
        if int(np.argmax(scores)) != len(scores) - 1:
            break
        grid.append(grid[-1] * step)
        scores.append(score(grid[-1]))
    return np.asarray(grid), scores


def lattice_walk(case: Case, max_iter: int, inputs: dict, start: float) -> tuple[np.ndarray, list[float]]:
    """l1-wavelet at ``max_iter`` iterations on the weights ``LATTICE_BASE * LATTICE_STEP**k`` around ``start``:
    the lattice point nearest ``start`` and its two neighbours, extended by one point at a time (at most 6) on the
    side of the best until the best is bracketed. Cached per case and count."""
    path = CACHE / f"l1-wavelet-it{max_iter}" / f"{case.name}.json"
    done: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
    solve = _solver("l1-wavelet", max_iter)
    acq = inputs["acq"]

    def score(k: int) -> float:
        if str(k) not in done:
            with torch.no_grad():
                image = solve(inputs["kspace"], inputs["mask"], inputs["maps"], LATTICE_BASE * LATTICE_STEP**k)
            done[str(k)] = psnr(acq.reference, np.abs(center_crop(image, acq.image_shape).numpy()))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(done))
        return done[str(k)]

    centre = round(float(np.log(start / LATTICE_BASE) / np.log(LATTICE_STEP)))
    ks = [centre - 1, centre, centre + 1]
    scores = [score(k) for k in ks]
    for _ in range(6):
        best = int(np.argmax(scores))
        if best == 0:
            ks.insert(0, ks[0] - 1)
            scores.insert(0, score(ks[0]))
        elif best == len(ks) - 1:
            ks.append(ks[-1] + 1)
            scores.append(score(ks[-1]))
        else:
            break
    return LATTICE_BASE * LATTICE_STEP ** np.asarray(ks, dtype=float), scores


def _joint_case(case: Case) -> dict:
    """One tuning case of the joint l1-wavelet search (a worker process: one thread)."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    inputs = case_inputs(case)
    start = rule_function(START)(inputs["r"], inputs["acceleration"], case.size)
    per_count = {}
    for count in ITERATIONS:
        grid, scores = lattice_walk(case, count, inputs, start)
        per_count[str(count)] = {"grid": grid.tolist(), "psnr": scores, "best_lam": refine_best(grid, scores),
                                 "best_psnr": max(scores)}
    best_count = max(ITERATIONS, key=lambda n: per_count[str(n)]["best_psnr"])
    return {**case.describe(), "sigma": inputs["sigma"], "r": inputs["r"],
            "acceleration_sampled": inputs["acceleration"],
            "sigma_simulated": float(inputs["acq"].attrs["noise_sigma"]),
            "best_iterations": best_count, "best_psnr": per_count[str(best_count)]["best_psnr"],
            "iterations": per_count, "seconds": round(time.perf_counter() - started, 1)}


def _iteration_terms(r: float, acceleration: float) -> list[float]:
    return [1.0, np.log(r), np.log(acceleration)]


def fit_iteration_rule(rows: list[dict]) -> dict:
    """Least squares ``log n = d0 + d1 log r + d2 log R`` over the rows' best iteration counts."""
    design = np.array([_iteration_terms(row["r"], row["acceleration_sampled"]) for row in rows])
    target = np.log([row["best_iterations"] for row in rows])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return {**{f"d{i}": float(c) for i, c in enumerate(coef)}, "choices": list(ITERATIONS)}


def against_start_rule(rows: list[dict]) -> dict:
    """The defaults before the joint tuning (``START``'s weight at 60 iterations) against the fitted rules, per case
    (PSNR interpolated in log weight on each case's lattice walk)."""
    start = rule_function(START)
    before = []
    for row in rows:
        at = row["iterations"]["60"]
        lam = start(row["r"], row["acceleration_sampled"], row["size"])
        before.append(float(np.interp(np.log(lam), np.log(at["grid"]), at["psnr"])))
    after = np.array([row["psnr_at_rule"] for row in rows])
    change = after - np.array(before)
    return {"mean": float(np.mean(before)), "min": float(np.min(before)), "rules_min": float(np.min(after)),
            "change_db": {"mean": float(np.mean(change)), "min": float(np.min(change)), "max": float(np.max(change))}}


def iteration_rule_function(rule: dict):
    coef = np.array([rule[f"d{i}"] for i in range(3)])
    choices = rule["choices"]

    def count(r: float, acceleration: float) -> int:
        log_n = float(np.dot(coef, _iteration_terms(r, acceleration)))
        return min(choices, key=lambda n: abs(np.log(n) - log_n))
    return count


def joint_l1_wavelet(cases: list[Case], workers: int, command: str) -> dict:
    """The joint (iterations, weight) tuning of l1-wavelet: the method's entry of the results file."""
    from concurrent.futures import ProcessPoolExecutor

    order = sorted(cases, key=lambda c: -c.size**2 * c.coils)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = {row["name"]: row for row in pool.map(_joint_case, order)}
    rows = [done[c.name] for c in cases]
    for n, row in enumerate(rows):
        print(f"l1-wavelet {n + 1}/{len(rows)} {row['name']}: r {row['r']:.4f} best {row['best_iterations']} it "
              f"{row['best_psnr']:.2f} dB", flush=True)
    iteration_rule = fit_iteration_rule(rows)
    count = iteration_rule_function(iteration_rule)
    for row in rows:  # the weight rule is fitted at the count the count rule chooses
        row["rule_iterations"] = count(row["r"], row["acceleration_sampled"])
        at = row["iterations"][str(row["rule_iterations"])]
        row.update({"best_lam": at["best_lam"], "grid": at["grid"], "psnr": at["psnr"]})
    rule = fit_rule(rows)
    lam = rule_function(rule)
    losses = []
    for row in rows:
        at_rule = float(np.interp(np.log(lam(row["r"], row["acceleration_sampled"], row["size"])),
                                  np.log(row["grid"]), row["psnr"]))
        row["psnr_at_rule"] = at_rule
        losses.append(row["best_psnr"] - at_rule)
    at_60 = [max(row["iterations"]["60"]["psnr"]) for row in rows]
    before = against_start_rule(rows)
    return {"command": command, "cases": len(rows), "iterations": list(ITERATIONS),
            "lattice": {"base": LATTICE_BASE, "step": LATTICE_STEP, "start_rule": START},
            "rule": rule, "iteration_rule": iteration_rule,
            "chosen_iterations": {str(n): sum(row["rule_iterations"] == n for row in rows) for n in ITERATIONS},
            "rule_loss_db": {"mean_db": float(np.mean(losses)), "max_db": float(np.max(losses))},
            "mean_psnr": {"at_rules": float(np.mean([row["psnr_at_rule"] for row in rows])),
                          "best_count_and_weight": float(np.mean([row["best_psnr"] for row in rows])),
                          "best_weight_at_60_iterations": float(np.mean(at_60)),
                          "start_rule_at_60_iterations": before["mean"]},
            "against_start_rule_at_60_iterations": before,
            "noise_estimate_over_simulated": {"min": min(row["sigma"] / row["sigma_simulated"] for row in rows),
                                              "max": max(row["sigma"] / row["sigma_simulated"] for row in rows)},
            "rows": rows}


def refine_best(grid: np.ndarray, scores: list[float]) -> float:
    """Arg-max of a parabola through the best grid point and its neighbours, in log weight (the edge point if
    the best is at an end of the grid)."""
    i = int(np.argmax(scores))
    if i == 0 or i == len(grid) - 1:
        return float(grid[i])
    x = np.log(grid[i - 1:i + 2])
    y = np.asarray(scores[i - 1:i + 2])
    a, b, _ = np.polyfit(x, y, 2)
    if a >= 0:
        return float(grid[i])
    return float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))


def fit_rule(rows: list[dict]) -> dict:
    """Least squares ``log lam = c0 + c1 log r + c2 log R + c3 log(n / 256) + c4 log r log R`` over the rows' best
    weights."""
    design = np.array([_terms(row["r"], row["acceleration_sampled"], row["size"]) for row in rows])
    target = np.log([row["best_lam"] for row in rows])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coef
    return {**{f"c{i}": float(c) for i, c in enumerate(coef)},
            "rms_log_residual": float(np.sqrt(np.mean(residual**2)))}


def _terms(r: float, acceleration: float, size: float) -> list[float]:
    return [1.0, np.log(r), np.log(acceleration), np.log(size / 256), np.log(r) * np.log(acceleration)]


def rule_function(rule: dict):
    coef = np.array([rule[f"c{i}"] for i in range(5)])
    return lambda r, acc, n: float(np.exp(np.dot(coef, _terms(r, acc, n))))


def loss_at(rows: list[dict], rule) -> dict:
    """PSNR lost on the tuning cases by the rule's weight against each case's best grid weight (interpolated on
    the grid in log weight)."""
    losses = []
    for row in rows:
        grid = np.log(row["grid"])
        lam = rule(row["r"], row["acceleration_sampled"], row["size"])
        at_rule = float(np.interp(np.log(lam), grid, row["psnr"]))
        losses.append(max(row["psnr"]) - at_rule)
    return {"mean_db": float(np.mean(losses)), "max_db": float(np.max(losses))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--cases", type=int, default=None, help="only the first N tuning cases")
    parser.add_argument("--half", action="store_true",
                        help="a balanced half of the tuning cases (half-fraction of the two-level factors, every SNR)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--workers", type=int, default=1, help="l1-wavelet: cases run at once (one thread each)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cases = [c for c in TUNING[:args.cases] if not args.half or half_fraction(c)]
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    command = "python benchmarks/mri_tune_defaults.py " + " ".join(argv or sys.argv[1:])
    result.update({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                   "split": "val (tuning only, benchmarks/mri_cases.TUNING)"})
    methods = result.setdefault("methods", {})
    for method in args.methods:
        if method == "l1-wavelet":
            methods[method] = joint_l1_wavelet(cases, args.workers, command)
            print(method, json.dumps(methods[method]["rule"]), json.dumps(methods[method]["iteration_rule"]),
                  json.dumps(methods[method]["rule_loss_db"]), json.dumps(methods[method]["mean_psnr"]), flush=True)
            continue
        rows = []
        for n, case in enumerate(cases):
            started = time.perf_counter()
            inputs = case_inputs(case)
            grid, scores = sweep(case, method, inputs)
            best = refine_best(grid, scores)
            rows.append({**case.describe(), "sigma": inputs["sigma"], "r": inputs["r"],
                         "acceleration_sampled": inputs["acceleration"],
                         "sigma_simulated": float(inputs["acq"].attrs["noise_sigma"]), "best_lam": best,
                         "best_psnr": max(scores), "grid": grid.tolist(), "psnr": scores})
            print(f"{method} {n + 1}/{len(cases)} {case.name}: r {inputs['r']:.4f} best lam {best:.2e} "
                  f"{max(scores):.2f} dB ({time.perf_counter() - started:.0f} s)", flush=True)
        rule = fit_rule(rows)
        ratios = [row["sigma"] / row["sigma_simulated"] for row in rows]
        methods[method] = {"command": command, "cases": len(cases), "grid": [float(v) for v in GRIDS[method]],
                           "rule": rule, "noise_estimate_over_simulated": {"min": min(ratios), "max": max(ratios)},
                           "rule_loss_db": loss_at(rows, rule_function(rule)), "rows": rows}
        print(method, json.dumps(rule), json.dumps(methods[method]["rule_loss_db"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"json: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
