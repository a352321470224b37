"""Classical multi-coil MRI: our ``l1-wavelet`` at its defaults against BART (``ecalib`` + ``pics -l1``) tuned
under the protocol (benchmarks/README.md): BART's ``(-r, -i)`` chosen on ``mri_cases.TUNING``, every side scored
on ``mri_cases.HELD_OUT`` (issue #14).

Run from the repository root::

    # once: tune BART on the 48 tuning cases, writes benchmarks/results/bart_tuning.json (~25 min, 1 thread)
    .venv/bin/python benchmarks/mri_classical.py --tune-only --tune-workers 2
    # score the held-out cases with the recorded BART tuning, writes benchmarks/results/mri_classical.json
    .venv/bin/python benchmarks/mri_classical.py
    # the BENCHMARKS.md table, read from that file
    .venv/bin/python benchmarks/mri_classical.py --markdown

``--tune`` redoes the tuning before scoring; ``--quick`` is a smoke run (2 tuning and 2 held-out cases, tiny
grids, one repeat) that writes to benchmarks/out/.

BART. Maps: ``bart ecalib -m 1`` (BART's defaults otherwise: 6x6 kernel, calibration region the fully sampled
centre up to 24x24, threshold 0.001, crop 0.8). On these data the second ESPIRiT set of the default ``-m 2`` is
zero after the crop (identical PSNR on the tuning cases tried) and only slows ``pics`` down, so one set is used,
as ours uses. Reconstruction: ``bart pics -S -l1 -r R -i I`` (``-S`` only rescales the output to data units; the
sampling pattern is the non-zero k-space, which is exactly the mask here - checked). Each slice is its own
``ecalib`` + ``pics`` run, as ours reconstructs slice by slice. Our (C, H, W) k-space is written as BART's
x = W, y = H, coil = dimension 3 (``write_cfl``), the output read back the same way; orientation was
checked (a transposed or flipped output scores 8-13 dB lower on a tuning slice) and ``bart fft -u -i 3`` equals
our ``ifft2c`` to 3e-7.
Tuning: one ``(R, I)`` maximising the mean PSNR over the 48 tuning cases (the first slice of each), from
R in 7 log-spaced values 1e-3 .. 1e-1 x I in {30, 50} (30 is pics's default); the grid, the per-case table and
the mean per setting are in bart_tuning.json. The R range brackets every per-case optimum seen (about 3e-3 at
40 dB 8x to 0.1 at 20 dB). I in {50, 100, 200} was tried first on 4 tuning cases: the iteration count moved PSNR
by under 0.6 dB with no consistent direction (the cycle-spinning shifts differ), and the 3x costlier grid did not
fit the shared 2-core machine. BART's documented default, ``ecalib`` (2 sets) + ``pics -S -l1`` (lambda 0, 30
iterations), is scored beside it.

Ours. ``pipelines.reconstructors.get("mri", "l1-wavelet")`` run as the service runs it, at whatever its defaults
are when this script runs (``m.run(acq, m.check({}), None)``, ESPIRiT maps included). As an oracle, the same
method with each ``lam`` of an 11-value log grid 2e-4 .. 5e-2 (plus the lam the default chose, where the output
says so in ``attrs["chosen"]["lam"]``) on every held-out case: "best lam" is the per-case maximum. These runs
are untimed and kept in a scratch cache (benchmarks/out/lam_oracle.json, keyed by case, lam, the method's
defaults and a digest of its code), which ``--oracle-only`` fills ahead (1 thread, e.g. beside the tuning). ``cg-sense``
and ``zero-filled`` at their defaults are scored for reference.

Metrics (fastMRI definitions, ``pipelines.metrics``, over the case's slices): each slice's magnitude (RSS over
ESPIRiT sets) is first scaled by the least-squares scalar ``a = <|x|, t> / <|x|, |x|>`` against the reference
``t`` (the same fit for every method), then PSNR / SSIM / NMSE of the volume. That fit is what the comparisons
across tools use (BART's and our intensity scales differ). Ours against ours (the default against the per-case best
lam) is judged without it (``psnr_raw``, ``ssim_raw``, also recorded for every method): both are in the data's units,
and the fit would credit a large threshold's intensity loss back, rewarding over-regularisation.

Timing: end to end, maps included on both sides, 2 threads each (BART via OpenMP, ours via
``torch.set_num_threads``), ``OMP_WAIT_POLICY=PASSIVE``. BART: wall time of its ``ecalib`` and ``pics`` processes
(input files written before the clock starts, output read after); ours: ``m.run`` on the in-memory acquisition.
Methods are interleaved, ``--repeats`` times per case; the median is reported (minimum beside it). BART's process
start-up (``bart version`` wall time, median of 20) is reported apart, with the share it makes of BART's time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import mri_cases  # noqa: E402
from mri_cases import Case  # noqa: E402

from pipelines.data import InputError  # noqa: E402
from pipelines.io.bart_cfl import read_cfl, write_cfl  # noqa: E402
from pipelines.system_tools import find_tool  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SCRATCH = ROOT / "benchmarks" / "out"
ECALIB = ["-m", "1"]
BART_DEFAULT = {"ecalib": [], "pics": ["-S", "-l1"]}
TUNE_R = [float(f"{r:.3g}") for r in np.geomspace(1e-3, 1e-1, 7)]
TUNE_I = [30, 50]
OUR_LAMS = [float(f"{lam:.3g}") for lam in np.geomspace(2e-4, 5e-2, 11)]
QUICK = {"tuning": [0, 9], "held_out": [10, 8], "R": [3e-3, 3e-2], "I": [30], "lams": [5e-4, 2e-3, 1e-2]}
TIMED = ("ours l1-wavelet", "bart tuned", "bart default", "ours cg-sense", "ours zero-filled")
Log = Callable[[str], None]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- BART's file format

def coil_kspace_to_bart(kspace: np.ndarray) -> np.ndarray:
    """(C, H, W) -> BART's (C, 1, H, W) C-order view (x = W, y = H, z = 1, coil = C)."""
    return kspace[:, None]


def bart_image_to_ours(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """BART's ``pics`` output (x, y, z, 1, map) read as (maps, 1, 1, H, W) -> (H, W) magnitude, RSS over sets,
    centre-cropped to ``shape``."""
    from models.physics.shapes import center_crop

    mag = np.sqrt((np.abs(image.reshape(-1, *image.shape[-2:])) ** 2).sum(0))
    return center_crop(mag, shape)


# --------------------------------------------------------------------------- BART runs

def bart_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}


def bart(args: list[str], threads: int) -> float:
    """Run ``bart <args>``; its wall time in seconds. A failure raises with BART's message."""
    start = time.perf_counter()
    done = subprocess.run(["bart", *args], capture_output=True, text=True, env=bart_env(threads))
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"bart {' '.join(args)} failed: {done.stderr.strip()}")
    return seconds


def write_slices(kspace: np.ndarray, mask: np.ndarray, workdir: Path) -> list[Path]:
    """One BART k-space file per slice of (slices, C, H, W); checks unsampled k-space is exactly zero, so that
    ``pics``'s own pattern estimate (the non-zero samples) is the mask."""
    unsampled = np.broadcast_to(mask, kspace.shape[-2:]) == 0
    if np.any(kspace[..., unsampled] != 0):
        raise ValueError("k-space is not zero where the mask is: pics would see another pattern")
    paths = []
    for index, slice_kspace in enumerate(kspace):
        path = workdir / f"ksp{index}"
        write_cfl(path, coil_kspace_to_bart(slice_kspace))
        paths.append(path)
    return paths


def bart_pics(ksp: Path, sens: Path, pics: list[str], threads: int) -> tuple[np.ndarray, float]:
    out = ksp.with_name(ksp.name + "_out")
    seconds = bart(["pics", *pics, str(ksp), str(sens), str(out)], threads)
    return read_cfl(out), seconds


def bart_volume(acq: Any, setting: dict, workdir: Path, threads: int) -> tuple[np.ndarray, float]:
    """``ecalib`` + ``pics`` per slice: the (slices, h, w) magnitude and the summed wall time of the processes."""
    paths = write_slices(acq.kspace, acq.mask, workdir)
    images, total = [], 0.0
    for ksp in paths:
        sens = ksp.with_name(ksp.name + "_sens")
        total += bart(["ecalib", *setting["ecalib"], str(ksp), str(sens)], threads)
        image, seconds = bart_pics(ksp, sens, setting["pics"], threads)
        total += seconds
        images.append(bart_image_to_ours(image, acq.image_shape))
    return np.stack(images), total


def bart_startup(threads: int, runs: int = 20) -> float:
    """Median wall time of ``bart version``: the cost of starting a BART process."""
    return float(np.median([bart(["version"], threads) for _ in range(runs)]))


def pics_args(r: float, i: int) -> list[str]:
    return ["-S", "-l1", "-r", f"{r:g}", "-i", str(i)]


# --------------------------------------------------------------------------- metrics

def fitted(mag: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each slice scaled by its least-squares scalar ``<x, t> / <x, x>`` against the reference."""
    mag = np.abs(mag).astype(np.float64)
    ref = reference.astype(np.float64)
    scale = (mag * ref).sum(axis=(-2, -1), keepdims=True) / np.maximum((mag * mag).sum(axis=(-2, -1),
                                                                                      keepdims=True), 1e-30)
    return scale * mag


def score(mag: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Metrics after the per-slice scalar fit, and PSNR / SSIM without it (``*_raw``)."""
    from pipelines.metrics import evaluate_volume

    scores = evaluate_volume(reference, fitted(mag, reference))
    scores = {k: round(v, 4 if k != "nmse" else 6) for k, v in scores.items()}
    raw = evaluate_volume(reference, np.abs(mag).astype(np.float32))
    return {**scores, "psnr_raw": round(raw["psnr"], 4), "ssim_raw": round(raw["ssim"], 4)}


# --------------------------------------------------------------------------- BART tuning

def setting_key(r: float, i: int) -> str:
    return f"-r {r:g} -i {i}"


def tune_case(case: Case, r_values: list[float], i_values: list[int], slices: int, threads: int) -> dict:
    """PSNR of every (R, I) on the first ``slices`` slices of ``case``; maps computed once per slice."""
    acq = mri_cases.load_case(case)
    reference = acq.reference[:slices]
    with tempfile.TemporaryDirectory(prefix="bart_tune_") as tmp:
        paths = write_slices(acq.kspace[:slices], acq.mask, Path(tmp))
        sens = [p.with_name(p.name + "_sens") for p in paths]
        for ksp, s in zip(paths, sens, strict=True):
            bart(["ecalib", *ECALIB, str(ksp), str(s)], threads)
        table = {}
        for r in r_values:
            for i in i_values:
                mags = [bart_image_to_ours(bart_pics(k, s, pics_args(r, i), threads)[0], acq.image_shape)
                        for k, s in zip(paths, sens, strict=True)]
                table[setting_key(r, i)] = score(np.stack(mags), reference)["psnr"]
    return {"case": case.name, "psnr": table}


def _case_cost(case: Case) -> int:
    return case.size ** 2 * case.coils


def run_tuning(cases: list[Case], r_values: list[float], i_values: list[int], slices: int, threads: int,
               workers: int) -> list[dict]:
    """The per-case grid tables, most expensive cases first over ``workers`` processes."""
    order = sorted(cases, key=_case_cost, reverse=True)
    rows: dict[str, dict] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(tune_case, c, r_values, i_values, slices, threads): c for c in order}
        for n, future in enumerate(futures, 1):
            row = future.result()
            rows[row["case"]] = row
            best = max(row["psnr"], key=row["psnr"].get)
            log(f"tuning {n}/{len(order)} {row['case']}: best {best} {row['psnr'][best]:.2f} dB")
    return [rows[c.name] for c in cases]


def tuning_winner(rows: list[dict]) -> tuple[str, dict[str, float]]:
    keys = list(rows[0]["psnr"])
    means = {k: round(float(np.mean([row["psnr"][k] for row in rows])), 4) for k in keys}
    return max(means, key=means.get), means


def tune_bart(cases: list[Case], r_values: list[float], i_values: list[int], args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    rows = run_tuning(cases, r_values, i_values, args.tune_slices, args.tune_threads, args.tune_workers)
    winner, means = tuning_winner(rows)
    r, i = winner.replace("-r ", "").split(" -i ")
    log(f"BART tuned on {len(cases)} cases: {winner} (mean {means[winner]:.2f} dB)")
    return {
        **provenance(args, args.tune_threads),
        "what": "BART pics -l1 (R, I) tuned on mri_cases.TUNING: one setting maximising the mean PSNR",
        "ecalib": ECALIB, "pics": "-S -l1 -r R -i I", "grid": {"R": r_values, "I": i_values},
        "slices_per_case": args.tune_slices, "seconds": round(time.perf_counter() - start, 1),
        "winner": {"R": float(r), "I": int(i), "ecalib": ECALIB, "pics": pics_args(float(r), int(i)),
                   "mean_psnr": means[winner]},
        "mean_psnr": means, "cases": {row["case"]: row["psnr"] for row in rows},
    }


# --------------------------------------------------------------------------- ours

def run_ours(acq: Any, method: str, params: dict) -> tuple[Any, float]:
    """Registry method ``method`` at ``params`` (defaults filled in), as the service runs it; its wall time."""
    from pipelines import reconstructors

    m = reconstructors.get("mri", method)
    checked = m.check(params)
    start = time.perf_counter()
    volume = m.run(acq, checked, None)
    return volume, time.perf_counter() - start


def chosen_lams(chosen: dict | None) -> list[float]:
    """The lam(s) a method reports it used (``attrs["chosen"]["lam"]``, one or one per slice), if any."""
    lam = (chosen or {}).get("lam")
    if lam is None:
        return []
    return sorted({float(f"{v:.4g}") for v in np.atleast_1d(np.asarray(lam, dtype=float)).ravel()})


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into plain Python, for the JSON."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def oracle_entry(acq: Any, lam: float) -> dict:
    volume, _ = run_ours(acq, "l1-wavelet", {"lam": lam})
    entry = score(volume.magnitude(), acq.reference)
    used = chosen_lams(volume.attrs.get("chosen"))
    if used and used != [float(f"{lam:.4g}")]:
        entry["lam_used"] = used  # the method did not take lam as given: the oracle is not what it says
    return entry


# the code an l1-wavelet run goes through: a change to any of these recomputes the cached oracle entries
ORACLE_SOURCES = ("models/classical/l1_wavelet.py", "models/classical/noise_rules.py",
                  "pipelines/methods/l1_wavelet.py", "pipelines/methods/_mri.py", "models/physics/mri/sensitivity.py",
                  "models/optim/fista.py", "models/physics/wavelet.py")


METRICS_VERSION = "fitted+raw"


def oracle_key(case: Case, lam: float) -> str:
    """Cache key: the case, the lam, every l1-wavelet default and a digest of the code it runs."""
    import hashlib

    from pipelines import reconstructors

    defaults = reconstructors.get("mri", "l1-wavelet").check({}).model_dump()
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in ORACLE_SOURCES)).hexdigest()[:16]
    return f"{case.name}|{lam:g}|{digest}|{json.dumps(defaults, sort_keys=True)}|{METRICS_VERSION}"


def lam_oracle(case: Case, acq: Any, lams: Iterable[float], cache: Path | None) -> dict[str, dict]:
    """``l1-wavelet`` at each lam (other parameters at their defaults) on ``acq``: metrics per lam. Untimed, so
    entries are kept in ``cache`` (scratch, keyed by case, lam and the method's defaults) and reused."""
    stored = json.loads(cache.read_text()) if cache and cache.exists() else {}
    table = {}
    for lam in sorted(set(lams)):
        key = oracle_key(case, lam)
        if key not in stored:
            stored[key] = oracle_entry(acq, lam)
            if cache:
                write_json(cache, stored, quiet=True)
        table[f"{lam:g}"] = stored[key]
    return table


def oracle_only(args: argparse.Namespace) -> None:
    """Fill the oracle cache for the held-out cases (no timing: may run beside other work, 1 thread)."""
    import torch

    torch.set_num_threads(1)
    for case in held_out_cases(args):
        lam_oracle(case, mri_cases.load_case(case), QUICK["lams"] if args.quick else OUR_LAMS, args.oracle_cache)
        log(f"oracle cached: {case.name}")


def held_out_cases(args: argparse.Namespace) -> list[Case]:
    return [mri_cases.HELD_OUT[n] for n in QUICK["held_out"]] if args.quick else mri_cases.HELD_OUT


# --------------------------------------------------------------------------- scoring

def timed_run(name: str, acq: Any, tuned: dict, workdir: Path) -> tuple[np.ndarray, float, dict]:
    """One timed run of method ``name``: (slices, h, w) magnitude, seconds, what the method reports."""
    if name.startswith("bart"):
        setting = tuned if name == "bart tuned" else BART_DEFAULT
        mag, seconds = bart_volume(acq, setting, workdir, THREADS)
        return mag, seconds, {}
    volume, seconds = run_ours(acq, name.removeprefix("ours "), {})
    return volume.magnitude(), seconds, {"chosen": jsonable(volume.attrs.get("chosen"))}


def score_case(case: Case, tuned: dict, lams: list[float], args: argparse.Namespace, startup: float) -> dict:
    acq = mri_cases.load_case(case)
    times: dict[str, list[float]] = {name: [] for name in TIMED}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mri_classical_") as tmp:
        for _ in range(args.repeats):
            for name in TIMED:
                mag, seconds, info = timed_run(name, acq, tuned, Path(tmp))
                times[name].append(seconds)
                results[name] = {**score(mag, acq.reference), **{k: v for k, v in info.items() if v}}
    for name in TIMED:
        results[name]["seconds"] = round(float(np.median(times[name])), 3)
        results[name]["seconds_min"] = round(min(times[name]), 3)
        results[name]["seconds_all"] = [round(t, 3) for t in times[name]]
    default_lams = chosen_lams(results["ours l1-wavelet"].get("chosen"))
    oracle = lam_oracle(case, acq, [*lams, *default_lams], args.oracle_cache)
    best = max(oracle, key=lambda k: oracle[k]["psnr_raw"])
    results["ours best lam"] = {**oracle[best], "lam": float(best)}
    processes = 2 * acq.num_slices
    return {"case": case.describe(), "achieved_acceleration": round(float(1 / np.mean(acq.mask)), 2),
            "num_low_frequencies": int(acq.num_low_frequencies), "methods": results, "lam_grid": oracle,
            "bart_processes": processes, "bart_startup_s": round(processes * startup, 3)}


def summarize(entries: list[dict]) -> dict:
    """Means over the held-out cases and the issue's checks (ours at defaults against BART tuned and the oracle)."""
    names = [*TIMED, "ours best lam"]
    mean = {n: {k: _mean_std([e["methods"][n][k] for e in entries]) for k in ("psnr", "ssim")} for n in names}
    ours = [e["methods"]["ours l1-wavelet"] for e in entries]
    bart = [e["methods"]["bart tuned"] for e in entries]
    best = [e["methods"]["ours best lam"] for e in entries]
    gaps = [b["psnr_raw"] - o["psnr_raw"] for o, b in zip(ours, best, strict=True)]
    ratios = [o["seconds"] / b["seconds"] for o, b in zip(ours, bart, strict=True)]
    return {
        "cases": len(entries), "mean": mean,
        "ours_default_ge_bart_tuned_psnr": sum(o["psnr"] >= b["psnr"] for o, b in zip(ours, bart, strict=True)),
        "ours_default_minus_bart_tuned_psnr": _stats([o["psnr"] - b["psnr"] for o, b in zip(ours, bart, strict=True)]),
        "gap_to_best_lam_db": {"max": round(max(gaps), 3), "mean": round(float(np.mean(gaps)), 3)},
        "within_0_5_db_of_best_lam": sum(g <= 0.5 for g in gaps),
        "time_ratio_ours_over_bart_tuned": {**_stats(ratios), "total": round(
            sum(o["seconds"] for o in ours) / sum(b["seconds"] for b in bart), 3)},
        "cases_ours_not_slower": sum(r <= 1 for r in ratios),
        "bart_startup_share_of_bart_tuned_time": round(sum(e["bart_startup_s"] for e in entries)
                                                       / sum(b["seconds"] for b in bart), 4),
    }


def _mean_std(values: list[float]) -> list[float]:
    return [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "mean": round(float(np.mean(values)), 3), "max": round(max(values), 3)}


# --------------------------------------------------------------------------- provenance

def provenance(args: argparse.Namespace, threads: int) -> dict:
    import torch

    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "models", "pipelines"], capture_output=True,
                           text=True).stdout.split("\n")
    return {
        "command": " ".join([".venv/bin/python benchmarks/mri_classical.py", *args.argv]),
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": threads, "omp_wait_policy": "PASSIVE",
        "versions": {"bart": subprocess.run(["bart", "version"], capture_output=True, text=True).stdout.strip(),
                     "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "git_head": head, "uncommitted_in_models_or_pipelines": [line for line in dirty if line],
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
    }


# --------------------------------------------------------------------------- command line

def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="scores JSON (default results/mri_classical.json; "
                                                               "--quick: out/mri_classical_quick.json)")
    parser.add_argument("--tuning-file", type=Path, default=None,
                        help="BART tuning JSON, read, or written by --tune (default results/bart_tuning.json; "
                             "--quick: out/bart_tuning_quick.json)")
    parser.add_argument("--tune", action="store_true", help="redo the BART tuning on mri_cases.TUNING, then score")
    parser.add_argument("--tune-only", action="store_true", help="redo the BART tuning and stop")
    parser.add_argument("--tune-threads", type=int, default=1, help="OpenMP threads per BART process when tuning")
    parser.add_argument("--tune-workers", type=int, default=1, help="tuning cases run at once")
    parser.add_argument("--tune-slices", type=int, default=1, help="slices of each tuning case tuned on")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed runs per method and case")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 tuning + 2 held-out cases, tiny grids, "
                                                            "1 repeat, tuning redone, files under benchmarks/out/")
    parser.add_argument("--oracle-cache", type=Path, default=None,
                        help="scratch cache of the untimed lam-oracle runs (default out/lam_oracle[_quick].json)")
    parser.add_argument("--oracle-only", action="store_true",
                        help="fill the oracle cache for the held-out cases and stop (1 thread; may run beside "
                             "the tuning)")
    parser.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md table from --out and stop")
    args = parser.parse_args(argv)
    args.argv = argv
    quick = "_quick" if args.quick else ""
    base = SCRATCH if args.quick else RESULTS
    args.out = args.out or base / f"mri_classical{quick}.json"
    args.tuning_file = args.tuning_file or base / f"bart_tuning{quick}.json"
    args.oracle_cache = args.oracle_cache or SCRATCH / f"lam_oracle{quick}.json"
    if args.quick:
        args.tune, args.repeats = True, 1
    return args


def load_tuning(path: Path) -> dict:
    """The recorded BART tuning; refused if it was tuned on anything but mri_cases.TUNING."""
    if not path.exists():
        raise SystemExit(f"{path} not found: run with --tune (or --tune-only) to tune BART on mri_cases.TUNING")
    tuning = json.loads(path.read_text())
    outside = set(tuning["cases"]) - {c.name for c in mri_cases.TUNING}
    if outside:
        raise SystemExit(f"{path} was tuned on cases outside mri_cases.TUNING ({sorted(outside)[:3]}...): "
                         "redo it with --tune")
    return tuning


def write_json(path: Path, data: dict, quiet: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(path)
    if not quiet:
        log(f"wrote {path}")


def tuning_step(args: argparse.Namespace) -> dict:
    if not (args.tune or args.tune_only):
        return load_tuning(args.tuning_file)
    cases = [mri_cases.TUNING[n] for n in QUICK["tuning"]] if args.quick else mri_cases.TUNING
    grid = (QUICK["R"], QUICK["I"]) if args.quick else (TUNE_R, TUNE_I)
    tuning = tune_bart(cases, *grid, args)
    write_json(args.tuning_file, tuning)
    return tuning


def scoring_step(args: argparse.Namespace, tuning: dict) -> dict:
    import torch

    from pipelines import reconstructors

    torch.set_num_threads(THREADS)
    cases = held_out_cases(args)
    lams = QUICK["lams"] if args.quick else OUR_LAMS
    tuned = {"ecalib": tuning["winner"]["ecalib"], "pics": tuning["winner"]["pics"]}
    startup = bart_startup(THREADS)
    result = {**provenance(args, THREADS), "tuning_file": str(args.tuning_file.relative_to(ROOT)
                                                              if args.tuning_file.is_relative_to(ROOT)
                                                              else args.tuning_file),
              "bart_tuned": {**tuned, "tuned_on": f"{len(tuning['cases'])} tuning cases",
                             "mean_psnr_tuning": tuning["winner"]["mean_psnr"]},
              "bart_default": BART_DEFAULT, "l1_wavelet_defaults": reconstructors.get("mri", "l1-wavelet")
              .check({}).model_dump(), "lam_grid": lams, "repeats": args.repeats, "bart_startup_s": round(startup, 4),
              "metric": "fastMRI PSNR/SSIM/NMSE over the case's slices after a per-slice least-squares scalar fit; "
                        "seconds = median over interleaved repeats, maps included", "cases": {}}
    for n, case in enumerate(cases, 1):
        entry = score_case(case, tuned, lams, args, startup)
        result["cases"][case.name] = entry
        m = entry["methods"]
        log(f"{n}/{len(cases)} {case.name}: ours {m['ours l1-wavelet']['psnr']:.2f} dB "
            f"{m['ours l1-wavelet']['seconds']:.1f} s, best lam {m['ours best lam']['psnr']:.2f}, "
            f"bart tuned {m['bart tuned']['psnr']:.2f} dB {m['bart tuned']['seconds']:.1f} s")
    result["summary"] = summarize(list(result["cases"].values()))
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    try:
        find_tool("bart", "bart")
    except InputError as err:
        print(err, file=sys.stderr)
        return 2
    if args.oracle_only:
        oracle_only(args)
        return 0
    tuning = tuning_step(args)
    if args.tune_only:
        return 0
    result = scoring_step(args, tuning)
    write_json(args.out, result)
    print(markdown(result))
    return 0


# --------------------------------------------------------------------------- the table

ROWS = (("ours l1-wavelet", "ours l1-wavelet (defaults)"), ("ours best lam", "ours l1-wavelet, per-case best lam"),
        ("bart tuned", "BART tuned"), ("bart default", "BART default"), ("ours cg-sense", "ours cg-sense (defaults)"),
        ("ours zero-filled", "zero-filled"))


def _short(name: str) -> str:
    c = name.split("_")
    return f"{c[1]} {c[2]} {c[3]} {c[4]} {c[5]}"


def case_table(result: dict) -> list[str]:
    lines = ["| case | ours default PSNR / SSIM / s | BART tuned PSNR / SSIM / s | BART default PSNR / SSIM | "
             "ours - BART tuned (dB) | time ours / BART | ours default, unfitted PSNR: lam (dB) | "
             "per-case best lam, unfitted PSNR: lam (dB) |",
             "|---|---|---|---|---:|---:|---|---|"]
    for name, entry in result["cases"].items():
        m = entry["methods"]
        o, b, d, best = m["ours l1-wavelet"], m["bart tuned"], m["bart default"], m["ours best lam"]
        chosen = (o.get("chosen") or {}).get("lam")
        lines.append(f"| {_short(name)} | {o['psnr']:.2f} / {o['ssim']:.3f} / {o['seconds']:.2f} | "
                     f"{b['psnr']:.2f} / {b['ssim']:.3f} / {b['seconds']:.2f} | "
                     f"{d['psnr']:.2f} / {d['ssim']:.3f} | {o['psnr'] - b['psnr']:+.2f} | "
                     f"{o['seconds'] / b['seconds']:.2f} | {chosen:.3g} ({o['psnr_raw']:.2f}) | "
                     f"{best['lam']:.3g} ({best['psnr_raw']:.2f}) |")
    return lines


def mean_table(result: dict) -> list[str]:
    mean = result["summary"]["mean"]
    lines = ["| method | PSNR (dB) | SSIM |", "|---|---:|---:|"]
    for key, label in ROWS:
        p, s = mean[key]["psnr"], mean[key]["ssim"]
        lines.append(f"| {label} | {p[0]:.2f} ± {p[1]:.2f} | {s[0]:.4f} ± {s[1]:.4f} |")
    return lines


def summary_lines(result: dict) -> list[str]:
    s, t = result["summary"], result["summary"]["time_ratio_ours_over_bart_tuned"]
    tuned = " ".join(result["bart_tuned"]["pics"])
    return [f"BART tuned: `ecalib {' '.join(result['bart_tuned']['ecalib'])}` + `pics {tuned}` "
            f"(chosen on {result['bart_tuned']['tuned_on']}); BART default: `ecalib` + `pics -S -l1`.",
            f"Ours at defaults >= BART tuned on {s['ours_default_ge_bart_tuned_psnr']} of {s['cases']} held-out cases "
            f"(ours - BART: min {s['ours_default_minus_bart_tuned_psnr']['min']:+.2f}, "
            f"mean {s['ours_default_minus_bart_tuned_psnr']['mean']:+.2f}, "
            f"max {s['ours_default_minus_bart_tuned_psnr']['max']:+.2f} dB); "
            f"within 0.5 dB of its per-case best lam (unfitted PSNR) on {s['within_0_5_db_of_best_lam']} of "
            f"{s['cases']} (largest gap {s['gap_to_best_lam_db']['max']:.2f} dB).",
            f"Time ours / BART tuned (median of {result['repeats']}, maps included, {result['threads']} threads): "
            f"per case {t['min']:.2f} - {t['max']:.2f} (mean {t['mean']:.2f}), all cases {t['total']:.2f}; "
            f"ours not slower on {s['cases_ours_not_slower']} of {s['cases']}. BART process start-up "
            f"{1000 * result['bart_startup_s']:.1f} ms each, {100 * s['bart_startup_share_of_bart_tuned_time']:.1f}% "
            "of BART's time."]


def markdown(result: dict) -> str:
    return "\n".join([*mean_table(result), "", *case_table(result), "", *summary_lines(result),
                      "", f"Command: `{result['command'].strip()}`"])


if __name__ == "__main__":
    raise SystemExit(main())
