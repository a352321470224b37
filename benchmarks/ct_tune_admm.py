"""Grid search of the ADMM-TV 3D weights per number of views (the settings in tuned_admm_settings).

Data: simulated with ``simulate_ct_dataset`` (noiseless, parallel beam, 180 degrees): the first two brain slabs
and the first ellipsoid volume at ``--size`` x ``--size`` x ``--slices``. Score: PSNR of the volume
(data range = reference max) averaged over the volumes. Prints one line per setting and the best per view count.

    PYTHONPATH=. python benchmarks/ct_tune_admm.py --size 128 --slices 16 --views 2 4 8 16 32
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from models.classical.ct import admm_tv_3d, fbp, sirt
from models.physics.ct.geometry import geometry_from_dict
from models.physics.ct.projector import CTProjector
from pipelines.io.sinogram import read_sinogram
from pipelines.simulate.ct import simulate_ct_dataset


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(ref.max() ** 2 / np.mean((x - ref) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--views", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--lams", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--rhos", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/ct_tune"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for views in args.views:
        acqs = []
        for source in ("brain", "ellipsoids"):
            paths = simulate_ct_dataset(args.out / f"{source}-{views}", views, source=source, size=args.size,
                                        slices=args.slices)
            acqs += [read_sinogram(p) for p in (paths[:2] if source == "brain" else paths[:1])]
        data = []
        for acq in acqs:
            geom = geometry_from_dict(acq.geometry, acq.angles)
            data.append((torch.from_numpy(acq.sinogram), CTProjector(geom), acq.reference))
        base_fbp = np.mean([psnr(fbp(y, op).numpy(), ref) for y, op, ref in data])
        base_sirt = np.mean([psnr(sirt(y, op, 200).numpy(), ref) for y, op, ref in data])
        print(f"views {views}: FBP {base_fbp:.2f} dB, SIRT-200 {base_sirt:.2f} dB", flush=True)
        best = None
        for lam, rho in itertools.product(args.lams, args.rhos):
            t0 = time.perf_counter()
            score = np.mean([psnr(admm_tv_3d(y, op, lam=lam, lam_z=lam, rho=rho, iterations=args.iterations)
                                  .numpy(), ref) for y, op, ref in data])
            print(f"  lam {lam:g} rho {rho:g} it {args.iterations}: {score:.2f} dB "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            if best is None or score > best[0]:
                best = (score, lam, rho)
        print(f"BEST views {views}: lam {best[1]:g} rho {best[2]:g} -> {best[0]:.2f} dB "
              f"(FBP {base_fbp:.2f}, SIRT {base_sirt:.2f})", flush=True)


if __name__ == "__main__":
    main()
