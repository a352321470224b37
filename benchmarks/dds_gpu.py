"""DDS and the DiffusionMBIR-style mode on a GPU: the 64-slice held-out test slab at 8 views, timed per volume.

Runs the shipped prior (torch, TF32 allowed) and the CT operator on ``--device``, DDS with the method's tuned
defaults (rho 0.01, lam 4e-5 scale-free, output denoised, eta 0.85, 5 CG) at 50 and 100 steps and with eta and CG
variants, and the mbir mode (ancestral steps, 1 CG per step) at 200, 500 and 1000 steps, in that order after a
2-step warm-up. Only ``models/`` and ``pipelines.io``/``pipelines.metrics`` are imported, so it runs on a bare GPU
machine with torch, h5py, scipy and monai. Nothing here chose a setting: the rows report what the variants do on
the held-out slab. The sinogram is ``ct_dds.py``'s 8-view test file
(``benchmarks/out/ct_dds/brain-test-8-None-64/brain-test.h5``). Writes ``--json``.

    PYTHONPATH=. python benchmarks/dds_gpu.py --device cuda \
        --sinogram benchmarks/out/ct_dds/brain-test-8-None-64/brain-test.h5
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

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

RUNS = [("warm-up", {"steps": 2}), ("dds", {"steps": 50}), ("dds100", {"steps": 100}),
        ("dds-eta0.5", {"steps": 50, "eta": 0.5}), ("dds-eta1", {"steps": 50, "eta": 1.0}),
        ("dds-cg2", {"steps": 50, "cg_iters": 2}), ("mbir200", {"steps": 200, "mode": "mbir", "cg_iters": 1}),
        ("mbir1000", {"steps": 1000, "mode": "mbir", "cg_iters": 1}),
        ("mbir", {"steps": 500, "mode": "mbir", "cg_iters": 1})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sinogram", required=True)
    ap.add_argument("--weights", default="models/zoo/ct-prior-brain-sim/model.pt")
    ap.add_argument("--json", default="benchmarks/results/dds_gpu.json")
    args = ap.parse_args()
    device = args.device
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    acq = read_sinogram(args.sinogram)
    geom = geometry_from_dict(acq.geometry, acq.angles)
    op = CTProjector(geom)
    sino = torch.from_numpy(np.asarray(acq.sinogram, np.float32)).to(device)
    mu_w = float(acq.attrs.get("mu_water_per_mm") or 0.0193)
    net = build_prior_unet()
    net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    den = TorchDenoiser(net, device)
    norm2 = operator_norm2(op)
    ny, nx = geom.image_shape
    shape = (sino.shape[0], ny, nx)
    y = sino / mu_w - op.forward(torch.ones(shape, device=device))

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rows = {}
    for label, kw in RUNS:
        sync()
        t0 = time.perf_counter()
        x = dds_sample(den, VPSchedule(), op, y, shape, lam=4e-5 * norm2, rho=0.01 * norm2, max_batch=64,
                       generator=torch.Generator(device).manual_seed(0), last_consistency=False, **kw)
        sync()
        sec = time.perf_counter() - t0
        mu = torch.clamp(mu_w * (1 + x), min=0).cpu().numpy()
        pairs = list(zip(acq.reference, mu, strict=True))
        rows[label] = {"seconds": round(sec, 2), **kw,
                       "axial_psnr": round(float(np.mean([psnr(r, a) for r, a in pairs])), 2),
                       "axial_ssim": round(float(np.mean([ssim(r, a) for r, a in pairs])), 4)}
        print(label, rows[label], flush=True)
    info = {"benchmark": "dds_gpu", "command": "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv),
            "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "volume": "brain-test 64 x 128 x 128, 8 views, I0 1e5", "rows": rows,
            "speedup_vs_mbir500": round(rows["mbir"]["seconds"] / rows["dds"]["seconds"], 1)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
