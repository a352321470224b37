"""DDS (50 steps) against the DiffusionMBIR-style mode (500 steps, and 1000 predictor-corrector steps) on the same
volume, and DDS's peak memory for a 256 x 256 x 256 volume with slice batching.

Speed and quality: the central ``--slices`` slices of the CT prior's held-out test slab (``brain-test``, 128 x 128,
8 views, I0 1e5), the shipped prior on ONNX Runtime (CPU), both modes with the same lam/rho and ``output``
(``--output``); mbir with ancestral steps and 1 CG iteration per step (``models.diffusion.dds``): at
``--mbir-steps`` (the ``mbir`` row every row's ratio is taken against; one network call per step), and at
``--pc-steps`` with DiffusionMBIR's Langevin corrector after each step (``corrector_snr``, 0.16 as there: two
network calls per step; 1000 steps, every timestep of the prior's schedule, make 1999 calls where the original's
2000 VE steps make about 4000; its ratios as ``speedup_over_mbir_pc``). All are timed
in one process, back to back, after a 1-step warm-up that builds the engine and the projector (one-time costs,
reported apart); PSNR/SSIM on axial slices. DDS runs at its defaults, warm-started from the ADMM-TV volume that
the consistency report computes in every run anyway (``start`` 0.3, ``benchmarks/dds_warm_start.py``), and beside
that from pure noise as the paper does (``dds (cold start)``) and at each of ``--warm-steps`` fewer steps. Every
row's time includes that ADMM-TV.

Memory: a child process reconstructs a 256^3 pseudo-CT volume (1 mm voxels, 8 views) with ``max_batch`` 16 for
``--memory-steps`` steps (the footprint does not grow with steps: each step holds the same arrays); its peak
resident set size (``ru_maxrss``) is reported next to that of a child that only imports and loads the same
inputs. Writes ``--json``.

    PYTHONPATH=. python benchmarks/dds_speed.py [--skip-memory | --skip-speed]   # a skipped part is kept from --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.io.sinogram import read_sinogram
from pipelines.metrics import psnr, ssim
from pipelines.pipeline import reconstruct
from pipelines.simulate.ct import simulate_ct_dataset

CHILD = r'''
import resource, sys, time
from pipelines.io.sinogram import read_sinogram
from pipelines.pipeline import reconstruct
acq = read_sinogram(sys.argv[1])
steps = int(sys.argv[2])
t0 = time.perf_counter()
if steps:
    reconstruct(acq, "dds", {"engine": "onnx", "steps": steps, "max_batch": 16})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0)
'''


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def axial(ref: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    return (float(np.mean([psnr(r, a) for r, a in zip(ref, x, strict=True)])),
            float(np.mean([ssim(r, a) for r, a in zip(ref, x, strict=True)])))


def big_volume(path: Path) -> Path:
    """A 256^3 pseudo-CT brain (1 mm) projected at 8 views, written as a sinogram file."""
    if path.exists():
        return path
    from models.physics.ct.projector import CTProjector
    from pipelines.ct_units import hu_to_mu
    from pipelines.data import CTAcquisition
    from pipelines.io.sinogram import write_sinogram
    from pipelines.simulate.ct import brain_volume, make_geometry

    hu, affine = brain_volume(256, 256, 10.0)
    geom = make_geometry("parallel", 256, 8, None, 1.0)
    mu = torch.from_numpy(hu_to_mu(hu))
    with torch.no_grad():
        sino = CTProjector(geom).forward(mu).numpy()
    write_sinogram(path, CTAcquisition(sinogram=sino.astype(np.float32), angles=geom.angles_array(),
                                       geometry=geom.to_dict(), affine=affine, attrs={"source": "brain 256^3"}))
    return path


def child(path: Path, steps: int) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": "."}
    res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(steps)], capture_output=True, text=True,
                         env=env, check=True)
    kib, seconds = res.stdout.split()[-2:]
    return int(kib) / 2**20, float(seconds)  # GiB (ru_maxrss is KiB on Linux)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--mbir-steps", type=int, default=500)
    ap.add_argument("--pc-steps", type=int, default=1000, help="steps of the predictor-corrector mbir row (0: none)")
    ap.add_argument("--corrector-snr", type=float, default=0.16)
    ap.add_argument("--output", default="denoised", choices=["consistent", "denoised"])
    ap.add_argument("--warm-steps", default="20,10", help="comma-separated step counts of the extra warm-started "
                    "rows (empty: none)")
    ap.add_argument("--memory-steps", type=int, default=1)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-speed", action="store_true", help="only the 256^3 memory measurement")
    ap.add_argument("--scratch", default="benchmarks/out/dds_speed")
    ap.add_argument("--json", default="benchmarks/results/dds_speed.json")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    path = scratch / f"brain-test-{args.slices}" / "brain-test.h5"
    if not path.exists():
        simulate_ct_dataset(path.parent, views=8, source="brain-test", size=128, slices=args.slices, noise_i0=1e5,
                            seed=2)
    acq = read_sinogram(path)
    t0 = time.perf_counter()
    reconstruct(acq, "dds", {"engine": "onnx", "steps": 1})
    one_time = time.perf_counter() - t0
    rows = {}
    fewer = [(f"dds, {n} steps", {"steps": int(n)}) for n in args.warm_steps.split(",") if n]
    mbir = {"mbir": {"mode": "mbir", "steps": args.mbir_steps, "cg_iterations": 1}}
    if args.pc_steps:
        mbir[f"mbir, predictor-corrector, {args.pc_steps} steps"] = {
            "mode": "mbir", "steps": args.pc_steps, "cg_iterations": 1, "corrector_snr": args.corrector_snr}
    runs = () if args.skip_speed else (("dds", {"steps": 50}), ("dds (cold start)", {"steps": 50, "start": 1.0}),
                                       *mbir.items(), *fewer)
    for label, params in runs:
        t0 = time.perf_counter()
        x = reconstruct(acq, "dds", {"engine": "onnx", "output": args.output, **params}).volume.data
        sec = time.perf_counter() - t0
        p, s = axial(acq.reference, x)
        calls = 2 * params["steps"] - 1 if params.get("corrector_snr") else params["steps"]  # none after the last
        rows[label] = {"params": params, "seconds": round(sec, 1), "network_calls_per_slice": calls,
                       "psnr": round(p, 2), "ssim": round(s, 4)}
        log(f"{label}: {rows[label]}")
    command = "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv)
    out = {"benchmark": "dds_speed", "command": command,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
           "date": time.strftime("%Y-%m-%d"),
           "volume": f"brain-test, central {args.slices} slices, 128 x 128, 8 views, I0 1e5",
           "one_time_seconds": round(one_time, 1), "rows": rows}
    earlier = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    if rows:
        out["speedup"] = round(rows["mbir"]["seconds"] / rows["dds"]["seconds"], 1)
        out["psnr_gain_db"] = round(rows["dds"]["psnr"] - rows["mbir"]["psnr"], 2)
        for label in rows:  # every row against each mbir row of the same run
            for ref in mbir:
                tail = "" if ref == "mbir" else "_pc"
                rows[label][f"speedup_over_mbir{tail}"] = round(rows[ref]["seconds"] / rows[label]["seconds"], 1)
                rows[label][f"psnr_gain_over_mbir{tail}_db"] = round(rows[label]["psnr"] - rows[ref]["psnr"], 2)
    elif earlier.get("rows"):  # --skip-speed keeps the speed rows of the earlier run
        out.update({k: earlier[k] for k in ("command", "date", "one_time_seconds", "rows", "speedup", "psnr_gain_db")
                    if k in earlier})
    if args.skip_memory and "memory_256" in earlier:  # and --skip-memory its memory figure
        memory = earlier["memory_256"]
        out["memory_256"] = {**memory, "command": memory.get("command", earlier.get("command")),
                             "date": memory.get("date", earlier.get("date"))}
    if not args.skip_memory:
        big = big_volume(scratch / "brain-256" / "brain-256.h5")
        base, _ = child(big, 0)
        peak, sec = child(big, args.memory_steps)
        out["memory_256"] = {"volume": "256 x 256 x 256, 8 views, max_batch 16", "steps": args.memory_steps,
                             "peak_rss_gib": round(peak, 2), "baseline_rss_gib": round(base, 2),
                             "seconds": round(sec, 1), "command": command,
                             "date": time.strftime("%Y-%m-%d")}
        log(f"memory: {out['memory_256']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
