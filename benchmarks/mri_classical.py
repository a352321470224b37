"""Classical multi-coil MRI reconstruction: ours (torch) against BART (``bart ecalib`` + ``bart pics``).

Run from the repository root::

    /work/main/.venv/bin/python benchmarks/mri_classical.py [--out benchmarks/out/mri_classical.json]

Cases (8 coils, 256 x 256, random column masks from ``models.physics.mri.masks``, the same
undersampled k-space for every method):

* ``phantom``: BART's numerical phantom, ``bart phantom -k -s 8 -x 256`` (analytic multi-coil
  k-space). Reference: root-sum-of-squares of the fully sampled coil images. (The non-coil phantom
  ``bart phantom -x 256`` is not a usable reference: the coil-combined image carries the
  sum-of-squares coil profile, which varies 3x over the object, and the analytic k-space has Gibbs
  ringing that no reconstruction from it can remove.)
* ``brain``: an axial slice of the ICBM152 2009 T1 template packaged with nilearn, zero-padded to
  256 x 256, smooth random phase, ``sigpy.mri.birdcage_maps`` coils and complex Gaussian noise.
  Reference: root-sum-of-squares of the noiseless fully sampled coil images.

Methods: ours with defaults; ours and BART each with their best setting from a parameter search on
the phantom at 4x (``--grid`` redoes both searches; by default the recorded winners are used);
BART's defaults (``ecalib`` + ``pics -l1``, whose lambda defaults to 0) and its common ``-r 0.01``;
CG-SENSE against ``pics -l2 -r 0.01``.

Accelerations 4x and 8x; the phantom at 4x keeps 24 centre lines (the setting BART's L1 was first
compared in), the others use fastMRI's centre fractions (0.08 at 4x, 0.04 at 8x).

Metrics (fastMRI definitions, on magnitudes): each reconstruction's magnitude is first scaled by the
least-squares optimal scalar ``a = <|x|, t> / <|x|, |x|>`` against the reference ``t`` (BART and we
scale images differently; the same fit is applied to every method), then PSNR with data range
``max(t)`` and SSIM (7x7 window, k1 0.01, k2 0.03, data range ``max(t)``). Multi-set ESPIRiT
reconstructions are combined by root-sum-of-squares over the sets first.

Timing is end to end: sensitivity maps plus reconstruction. BART: wall time of the ``bart ecalib``
and ``bart pics`` processes (the input file is written before the clock starts). Ours: wall time of
the map estimate and the solver on in-memory tensors. Both get 2 threads (BART via OpenMP, ours via
``torch.set_num_threads(2)``) and ``OMP_WAIT_POLICY=PASSIVE``: on a shared machine, spinning OpenMP
workers (the default policy) slowed BART by up to 10x when another process held a core; passive
waiting changes no result. Each timing is the minimum over ``--repeats`` interleaved runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.classical.l1_wavelet import l1_wavelet  # noqa: E402
from models.classical.mri import cg_sense, zero_filled  # noqa: E402
from models.physics.mri.coils import rss  # noqa: E402
from models.physics.mri.fft import fft2c, ifft2c  # noqa: E402
from models.physics.mri.masks import random_column_mask  # noqa: E402
from models.physics.mri.sensitivity import espirit_torch  # noqa: E402

SIZE = 256
COILS = 8


# --------------------------------------------------------------------------- BART's file format

def write_cfl(base: Path, array: np.ndarray) -> None:
    """Write ``array`` as BART ``base.hdr`` + ``base.cfl`` (complex64, column-major).

    Our arrays are C-ordered with the fastest axis last; BART's first dimension is the fastest, so
    the BART dimensions are our shape reversed (an (C, H, W) array becomes W x H x 1 x C: BART's
    read axis x = our W, y = our H, coils in dimension 3).
    """
    array = np.ascontiguousarray(array, dtype=np.complex64)
    dims = list(array.shape[::-1]) + [1] * (16 - array.ndim)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    array.tofile(base.with_suffix(".cfl"))


def read_cfl(base: Path) -> np.ndarray:
    """Read a BART ``.hdr``/``.cfl`` pair into a C-ordered array with BART's dimensions reversed."""
    lines = base.with_suffix(".hdr").read_text().splitlines()
    dims = [int(v) for v in lines[lines.index("# Dimensions") + 1].split()]
    data = np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{base}.cfl holds {data.size} values, its header says {dims}")
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return data.reshape(dims[::-1])


def coil_kspace_to_bart(kspace: np.ndarray) -> np.ndarray:
    """(C, H, W) -> BART's (C, 1, H, W) C-order view (x = W, y = H, z = 1, coil = C)."""
    return kspace[:, None]


def bart_maps_to_ours(maps: np.ndarray, coils: int, size: int) -> np.ndarray:
    """BART sensitivities (x, y, z, coil, map) -> (maps, coils, H, W)."""
    return maps.reshape(-1, coils, size, size)


# --------------------------------------------------------------------------- cases

def phantom_case(workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """BART's multi-coil phantom k-space (C, H, W) and its fully sampled RSS reference (H, W)."""
    base = workdir / "phantom_ksp"
    subprocess.run(["bart", "phantom", "-k", "-s", str(COILS), "-x", str(SIZE), str(base)], check=True,
                   capture_output=True)
    kspace = read_cfl(base).reshape(COILS, SIZE, SIZE)
    reference = rss(ifft2c(torch.from_numpy(kspace))).numpy()
    return kspace, reference


def _smooth_random_field(shape: tuple[int, int], rng: np.random.Generator, cutoff: int = 3) -> np.ndarray:
    """Real field from random low-frequency Fourier coefficients (|k| <= cutoff), unit peak."""
    spec = np.zeros(shape, dtype=np.complex128)
    cy, cx = shape[0] // 2, shape[1] // 2
    spec[cy - cutoff: cy + cutoff + 1, cx - cutoff: cx + cutoff + 1] = (
        rng.standard_normal((2 * cutoff + 1,) * 2) + 1j * rng.standard_normal((2 * cutoff + 1,) * 2))
    field = np.fft.ifft2(np.fft.ifftshift(spec)).real
    return field / np.abs(field).max()


def brain_case(seed: int = 0, noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Simulated multi-coil k-space of an ICBM152 T1 axial slice and its noiseless RSS reference.

    The slice (z = 100 of 189, 1 mm) is rotated so anterior is up, padded to 256 x 256, scaled to
    unit peak, given a smooth random phase (up to +-pi) and 8 birdcage coil profiles; complex noise
    of standard deviation ``noise`` times the mean brain magnitude of a coil image is added in
    k-space (unitary FFT: the same standard deviation per pixel in every coil image).
    """
    import sigpy.mri

    from pipelines.simulate.template import load_icbm152

    volume = load_icbm152()[0]["t1"]
    axial = np.rot90(volume[:, :, 100])  # (y, x) with anterior up
    image = np.zeros((SIZE, SIZE), dtype=np.float32)
    oy, ox = (SIZE - axial.shape[0]) // 2, (SIZE - axial.shape[1]) // 2
    image[oy: oy + axial.shape[0], ox: ox + axial.shape[1]] = axial / axial.max()
    rng = np.random.default_rng(seed)
    phase = np.pi * _smooth_random_field(image.shape, rng)
    obj = image * np.exp(1j * phase)
    maps = sigpy.mri.birdcage_maps((COILS, SIZE, SIZE), r=1.2).astype(np.complex64)
    coil_images = (maps * obj).astype(np.complex64)
    reference = np.sqrt((np.abs(coil_images) ** 2).sum(0)).astype(np.float32)
    kspace = fft2c(torch.from_numpy(coil_images)).numpy()
    sigma = noise * float(np.abs(coil_images)[:, image > 0.05].mean())
    kspace = kspace + sigma * (rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)) / np.sqrt(2)
    return kspace.astype(np.complex64), reference


def make_case(name: str, acceleration: int, workdir: Path) -> dict:
    if name == "phantom":
        kspace, reference = phantom_case(workdir)
        center_fraction = 24 / SIZE if acceleration == 4 else None
    elif name == "brain":
        kspace, reference = brain_case()
        center_fraction = None
    else:
        raise ValueError(f"unknown case {name!r}")
    mask = random_column_mask(SIZE, acceleration, center_fraction, seed=1)
    under = (kspace * mask.mask).astype(np.complex64)
    return {"name": name, "acceleration": acceleration, "kspace": under, "mask": mask.mask, "reference": reference,
            "center_lines": mask.num_low_frequencies, "achieved_acceleration": round(mask.acceleration, 2)}


# --------------------------------------------------------------------------- metrics

def metrics(image: np.ndarray, reference: np.ndarray) -> dict:
    """fastMRI PSNR/SSIM/NMSE of ``|image|`` (RSS over map sets) after the least-squares scalar fit."""
    from skimage.metrics import structural_similarity

    mag = np.abs(image).astype(np.float64)
    if mag.ndim == 3:
        mag = np.sqrt((mag**2).sum(0))
    ref = reference.astype(np.float64)
    scale = float((mag * ref).sum() / max((mag * mag).sum(), 1e-30))
    mag = scale * mag
    mse = float(((mag - ref) ** 2).mean())
    return {
        "psnr": 20 * np.log10(ref.max()) - 10 * np.log10(mse),
        "ssim": float(structural_similarity(ref, mag, win_size=7, data_range=float(ref.max()), K1=0.01, K2=0.03)),
        "nmse": float(((mag - ref) ** 2).sum() / (ref**2).sum()),
    }


# --------------------------------------------------------------------------- methods

def run_bart(case: dict, ecalib: list[str], pics: list[str], workdir: Path) -> tuple[np.ndarray, float]:
    """``bart ecalib <ecalib> ksp sens`` then ``bart pics <pics> ksp sens out``; wall time of both."""
    ksp, sens, out = workdir / "ksp", workdir / "sens", workdir / "out"
    write_cfl(ksp, coil_kspace_to_bart(case["kspace"]))
    start = time.perf_counter()
    subprocess.run(["bart", "ecalib", *ecalib, str(ksp), str(sens)], check=True, capture_output=True)
    subprocess.run(["bart", "pics", *pics, str(ksp), str(sens), str(out)], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return read_cfl(out).reshape(-1, SIZE, SIZE), seconds


def run_ours(case: dict, method: str, params: dict) -> tuple[np.ndarray, float]:
    kspace = torch.from_numpy(case["kspace"])
    mask = torch.from_numpy(case["mask"])
    start = time.perf_counter()
    if method == "zero-filled":
        image = zero_filled(kspace, mask)
    else:
        maps = espirit_torch(kspace)
        if method == "cg-sense":
            image = cg_sense(kspace, mask, maps, **params)
        else:
            image = l1_wavelet(kspace, mask, maps, **params)
    seconds = time.perf_counter() - start
    return image.numpy(), seconds


BART_GRID = [(maps, lam, iters) for maps in ("1", "2") for lam in (0.0003, 0.001, 0.003, 0.01)
             for iters in (30, 100, 200)]


def bart_setting(maps: str, lam: float | None, iters: int | None, reg: str = "-l1") -> tuple[list[str], list[str]]:
    ecalib = ["-m", maps] if maps != "default" else []
    pics = ["-S", reg] + (["-r", str(lam)] if lam is not None else []) + (["-i", str(iters)] if iters else [])
    return ecalib, pics


# Settings picked by --grid on the phantom at 4x (best PSNR); the run that picked them is in BENCHMARKS.md.
BART_BEST = {"ecalib": ["-m", "2"], "pics": ["-S", "-l1", "-r", "0.0003", "-i", "200"]}
OURS_BEST = {"lam": 2e-4, "max_iter": 200}
OUR_GRID = [{"lam": lam, "max_iter": iters} for lam in (2e-4, 5e-4, 1e-3) for iters in (60, 100, 200)]


def select_bart(case: dict, workdir: Path, log) -> tuple[dict, list[dict]]:
    """Best ``ecalib -m {1,2}`` + ``pics -l1 -r lam -i iters`` on ``case`` by PSNR (one run each)."""
    grid = []
    for maps, lam, iters in BART_GRID:
        ecalib, pics = bart_setting(maps, lam, iters)
        image, seconds = run_bart(case, ecalib, pics, workdir)
        entry = {"ecalib": ecalib, "pics": pics, "seconds": round(seconds, 3), **metrics(image, case["reference"])}
        grid.append(entry)
        log(f"  grid bart ecalib {' '.join(ecalib)} pics {' '.join(pics)}: "
            f"{entry['psnr']:.2f} dB {entry['ssim']:.4f} {seconds:.2f} s")
    best = max(grid, key=lambda e: e["psnr"])
    return {"ecalib": best["ecalib"], "pics": best["pics"]}, grid


def select_ours(case: dict, log) -> tuple[dict, list[dict]]:
    """Best ``l1_wavelet(lam, max_iter)`` (other parameters default) on ``case`` by PSNR."""
    grid = []
    for params in OUR_GRID:
        image, seconds = run_ours(case, "l1-wavelet", params)
        entry = {"params": params, "seconds": round(seconds, 3), **metrics(image, case["reference"])}
        grid.append(entry)
        log(f"  grid ours l1_wavelet {params}: {entry['psnr']:.2f} dB {entry['ssim']:.4f} {seconds:.2f} s")
    return max(grid, key=lambda e: e["psnr"])["params"], grid


def method_table(bart_best: dict, ours_best: dict) -> dict[str, dict]:
    """name -> how to run it. BART's L2 (CG-SENSE counterpart) uses its default 30 CG iterations."""
    return {
        "ours zero-filled": {"kind": "ours", "method": "zero-filled", "params": {}},
        "ours cg-sense": {"kind": "ours", "method": "cg-sense", "params": {}},
        "bart pics -l2 -r 0.01": {"kind": "bart", "ecalib": ["-m", "1"], "pics": ["-S", "-l2", "-r", "0.01"]},
        "ours l1-wavelet": {"kind": "ours", "method": "l1-wavelet", "params": {}},
        "ours l1-wavelet best": {"kind": "ours", "method": "l1-wavelet", "params": ours_best},
        "bart default (pics -l1)": {"kind": "bart", "ecalib": [], "pics": ["-S", "-l1"]},
        "bart pics -l1 -r 0.01": {"kind": "bart", "ecalib": [], "pics": ["-S", "-l1", "-r", "0.01"]},
        "bart best": {"kind": "bart", "ecalib": bart_best["ecalib"], "pics": bart_best["pics"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "mri_classical.json")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method and case (minimum kept)")
    parser.add_argument("--grid", action="store_true",
                        help="redo the parameter searches on the phantom at 4x (BART: 24 runs, several minutes) "
                             "instead of using the recorded best settings")
    args = parser.parse_args(argv)
    if shutil.which("bart") is None:
        print("bart not found: install the Debian package 'bart' (scripts/install-system-deps.sh)", file=sys.stderr)
        return 2
    torch.set_num_threads(THREADS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(["bart", "version"], capture_output=True, text=True).stdout.strip()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = {"command": "python benchmarks/mri_classical.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "bart_version": version, "torch": torch.__version__, "threads": THREADS,
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "machine": platform.platform(),
              "load_average_start": os.getloadavg(), "metric": "fastMRI PSNR/SSIM on magnitudes after a "
              "least-squares scalar fit; time = min over repeats, maps included", "cases": {}}
    with tempfile.TemporaryDirectory(prefix="mri_classical_") as tmp:
        workdir = Path(tmp)
        cases = [make_case(n, r, workdir) for n, r in (("phantom", 4), ("phantom", 8), ("brain", 4), ("brain", 8))]
        bart_best, ours_best = BART_BEST, OURS_BEST
        if args.grid:
            log("parameter searches on the phantom at 4x:")
            bart_best, result["bart_grid_phantom_4x"] = select_bart(cases[0], workdir, log)
            ours_best, result["ours_grid_phantom_4x"] = select_ours(cases[0], log)
        result["bart_best_setting"] = bart_best
        result["ours_best_setting"] = ours_best
        log(f"best on the phantom at 4x: bart ecalib {' '.join(bart_best['ecalib'])} pics "
            f"{' '.join(bart_best['pics'])}; ours l1_wavelet {ours_best}")
        methods = method_table(bart_best, ours_best)
        for case in cases:
            key = f"{case['name']} {case['acceleration']}x"
            entry = {"center_lines": case["center_lines"], "achieved_acceleration": case["achieved_acceleration"],
                     "methods": {}}
            times: dict[str, list[float]] = {m: [] for m in methods}
            images: dict[str, np.ndarray] = {}
            for _ in range(args.repeats):
                for name, spec in methods.items():
                    if spec["kind"] == "bart":
                        image, seconds = run_bart(case, spec["ecalib"], spec["pics"], workdir)
                    else:
                        image, seconds = run_ours(case, spec["method"], spec["params"])
                    times[name].append(seconds)
                    images[name] = image
            for name, spec in methods.items():
                m = metrics(images[name], case["reference"])
                entry["methods"][name] = {**{k: round(v, 4) for k, v in m.items()},
                                          "seconds": round(min(times[name]), 3),
                                          "seconds_all": [round(t, 3) for t in times[name]],
                                          "setting": ({"ecalib": spec["ecalib"], "pics": spec["pics"]}
                                                      if spec["kind"] == "bart" else spec["params"] or "defaults")}
                log(f"{key:12s} {name:26s} {m['psnr']:6.2f} dB  SSIM {m['ssim']:.4f}  {min(times[name]):6.2f} s")
            result["cases"][key] = entry
    result["load_average_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = ["| case | method | PSNR (dB) | SSIM | time (s) |", "|---|---|---:|---:|---:|"]
    for key, entry in result["cases"].items():
        for name, m in entry["methods"].items():
            lines.append(f"| {key} | {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['seconds']:.2f} |")
    lines += ["", "| case | ours vs BART | ΔPSNR (dB) | ΔSSIM | time ratio (ours / BART) |", "|---|---|---:|---:|---:|"]
    pairs = [("ours l1-wavelet", "bart best"), ("ours l1-wavelet best", "bart best"),
             ("ours l1-wavelet", "bart pics -l1 -r 0.01"), ("ours l1-wavelet", "bart default (pics -l1)"),
             ("ours cg-sense", "bart pics -l2 -r 0.01")]
    for key, entry in result["cases"].items():
        for ours, theirs in pairs:
            a, b = entry["methods"][ours], entry["methods"][theirs]
            lines.append(f"| {key} | {ours} vs {theirs} | {a['psnr'] - b['psnr']:+.2f} | {a['ssim'] - b['ssim']:+.4f} "
                         f"| {a['seconds'] / b['seconds']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
