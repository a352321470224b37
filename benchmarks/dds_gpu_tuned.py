"""DDS tuned per case on a GPU: settings chosen on the tuning slab, scored on the held-out test slab, and timed
against the DiffusionMBIR-style mode.

For each case of ``ct_dds.py`` (8, 4 and 2 views, a 120-degree arc of 60 views) DDS (50 steps, output the last
Tweedie estimate) runs over a grid of ADMM penalty ``rho`` (scale-free, times ``||A^T A||``; ``lam`` follows it
as in ``ct_dds.py``), CG iterations per step and DDIM ``eta`` on the brain's tuning slab (8 central slices); the
best by axial PSNR (ties within 0.1 dB broken by SSIM) is scored on the 64-slice held-out test slab in axial,
coronal and sagittal planes, next to the method's defaults. Then, at 8 views on the test slab, DDS with its tuned
setting is timed against the mbir mode (ancestral steps, 1 CG per step) at ``--mbir-steps``.

Only ``models/`` and ``pipelines.io``/``pipelines.metrics`` are imported, so it runs on a bare GPU machine with
torch, h5py, scipy and monai. The sinograms are ``ct_dds.py``'s files (run it first, or at least its
acquisitions). Writes ``--json`` after every stage, so a run cut short keeps what it finished.

    PYTHONPATH=. python benchmarks/dds_gpu_tuned.py --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.classical.ct import operator_norm2
from models.diffusion.dds import dds_sample
from models.diffusion.denoiser import TorchDenoiser
from models.diffusion.network import build_prior_unet
from models.diffusion.schedule import VPSchedule
from models.physics.ct.geometry import geometry_from_dict
from models.physics.ct.projector import CTProjector
from pipelines.io.sinogram import read_sinogram
from pipelines.metrics import psnr, ssim

CASES = [{"name": "8 views", "views": 8, "arc": None, "regime": "sparse"},
         {"name": "4 views", "views": 4, "arc": None, "regime": "sparse"},
         {"name": "2 views", "views": 2, "arc": None, "regime": "sparse"},
         {"name": "120-degree arc, 60 views", "views": 60, "arc": 120.0, "regime": "limited"}]
LAM_OVER_RHO = {"sparse": 0.004, "limited": 0.04}  # as ct_dds.py: the method's lam rule
RHOS = (0.003, 0.01, 0.03)
CG_ITERS = (1, 2, 5)
ETAS = (0.5, 0.85, 1.0)
DEFAULT = {"rho": 0.01, "cg_iters": 5, "eta": 0.85}


class Problem:
    """One sinogram file as ``y = A x`` with ``x = mu / mu_water - 1`` (HU / 1000) on ``device``."""

    def __init__(self, path: Path, device: str):
        self.acq = read_sinogram(path)
        geom = geometry_from_dict(self.acq.geometry, self.acq.angles)
        self.op = CTProjector(geom)
        sino = torch.from_numpy(np.asarray(self.acq.sinogram, np.float32)).to(device)
        self.mu_w = float(self.acq.attrs.get("mu_water_per_mm") or 0.0193)
        self.shape = (sino.shape[0], *geom.image_shape)
        self.y = sino / self.mu_w - self.op.forward(torch.ones(self.shape, device=device))
        self.norm2 = operator_norm2(self.op)
        self.device = device

    def solve(self, den: TorchDenoiser, regime: str, rho: float, cg_iters: int, eta: float | str,
              steps: int = 50, mode: str = "dds") -> tuple[np.ndarray, float]:
        sync(self.device)
        t0 = time.perf_counter()
        x = dds_sample(den, VPSchedule(), self.op, self.y, self.shape, steps=steps, cg_iters=cg_iters, eta=eta,
                       lam=LAM_OVER_RHO[regime] * rho * self.norm2, rho=rho * self.norm2, mode=mode, max_batch=64,
                       generator=torch.Generator(self.device).manual_seed(0), last_consistency=False)
        sync(self.device)
        sec = time.perf_counter() - t0
        return torch.clamp(self.mu_w * (1 + x), min=0).cpu().numpy(), sec

    def scores(self, mu: np.ndarray, planes: tuple[str, ...] = ("axial",)) -> dict[str, dict[str, float]]:
        """Mean PSNR/SSIM over the planes that cut the head (as ``ct_dds.py``)."""
        ref, out = self.acq.reference, {}
        for name in planes:
            axis = ("axial", "coronal", "sagittal").index(name)
            refs, xs = np.moveaxis(ref, axis, 0), np.moveaxis(mu, axis, 0)
            keep = [k for k in range(refs.shape[0]) if refs[k].max() > 0.5 * self.mu_w]
            out[name] = {"psnr": round(float(np.mean([psnr(refs[k], xs[k]) for k in keep])), 3),
                         "ssim": round(float(np.mean([ssim(refs[k], xs[k]) for k in keep])), 4)}
        return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    top = max(r["axial"]["psnr"] for r in rows)
    return max((r for r in rows if r["axial"]["psnr"] >= top - 0.1), key=lambda r: r["axial"]["ssim"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--scratch", default="benchmarks/out/ct_dds")
    ap.add_argument("--weights", default="models/zoo/ct-prior-brain-sim/model.pt")
    ap.add_argument("--mbir-steps", default="500,1000")
    ap.add_argument("--steps", type=int, default=50, help="DDS steps (fewer only for a smoke test)")
    ap.add_argument("--json", default="benchmarks/results/dds_gpu_tuned.json")
    args = ap.parse_args()
    device, scratch = args.device, Path(args.scratch)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    net = build_prior_unet()
    net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    den = TorchDenoiser(net, device)
    info: dict[str, Any] = {
        "benchmark": "dds_gpu_tuned", "command": "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "dds_steps": args.steps,
        "grid": {"rho": RHOS, "cg_iters": CG_ITERS, "eta": ETAS, "lam_over_rho": LAM_OVER_RHO},
        "data": {"tuning": "brain-tuning slab, central 8 slices", "test": "brain-test slab, 64 slices (held out)",
                 "i0": 1e5}, "cases": [], "timing": None}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(info, indent=1) + "\n")

    Problem(scratch / "brain-tuning-8-None-8" / "brain-tuning.h5", device).solve(den, "sparse", 0.01, 5, 0.85, 2)
    tuned_8 = None
    for case in CASES:
        folder = f"{case['views']}-{case['arc']}"
        tune = Problem(scratch / f"brain-tuning-{folder}-8" / "brain-tuning.h5", device)
        grid = []
        for rho, cg, eta in itertools.product(RHOS, CG_ITERS, ETAS):
            mu, sec = tune.solve(den, case["regime"], rho, cg, eta, args.steps)
            grid.append({"rho": rho, "cg_iters": cg, "eta": eta, "seconds": round(sec, 3), **tune.scores(mu)})
        chosen = best(grid)
        print(case["name"], "tuned", chosen, flush=True)
        test = Problem(scratch / f"brain-test-{folder}-64" / "brain-test.h5", device)
        rows = {}
        for label, setting in (("dds (defaults)", DEFAULT), ("dds (tuned)", chosen)):
            params = {k: setting[k] for k in ("rho", "cg_iters", "eta")}
            mu, sec = test.solve(den, case["regime"], steps=args.steps, **params)
            rows[label] = {"params": params, "seconds": round(sec, 3),
                           **test.scores(mu, ("axial", "coronal", "sagittal"))}
            print(case["name"], label, rows[label], flush=True)
        info["cases"].append({"case": case, "tuning_grid": grid, "chosen": chosen, "test": rows})
        if case["views"] == 8:
            tuned_8 = (test, {k: chosen[k] for k in ("rho", "cg_iters", "eta")})
        save()

    if tuned_8 is not None:
        test, params = tuned_8
        timing = {}
        mu, sec = test.solve(den, "sparse", steps=args.steps, **params)
        timing["dds"] = {"steps": args.steps, **params, "seconds": round(sec, 3), **test.scores(mu)}
        for n in (int(s) for s in args.mbir_steps.split(",")):
            mu, sec = test.solve(den, "sparse", params["rho"], 1, "ancestral", steps=n, mode="mbir")
            timing[f"mbir{n}"] = {"steps": n, "rho": params["rho"], "cg_iters": 1, "eta": "ancestral",
                                  "seconds": round(sec, 3), **test.scores(mu)}
            timing[f"mbir{n}"]["time_ratio_to_dds"] = round(sec / timing["dds"]["seconds"], 1)
            print("timing", f"mbir{n}", timing[f"mbir{n}"], flush=True)
            info["timing"] = timing
            save()
    save()


if __name__ == "__main__":
    main()
