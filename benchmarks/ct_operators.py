"""CT projector and FBP: time and accuracy of ours against scikit-image (radon/iradon) and astra-toolbox (CPU).

Same data for all, one run, ratios against the baselines measured in the same run:

- phantom: the 2D modified Shepp-Logan at N x N (odd N so that every tool puts the rotation centre on the same
  pixel), pixel-averaged with 4 x 4 supersampling; exact parallel-beam line integrals of its ellipses are the
  projector's ground truth, the phantom itself the FBP's;
- conventions: our angle theta is scikit-image's and astra's ``-theta`` (checked in the run: max difference of
  our Joseph projector and astra's ``linear`` projector is printed);
- projector error: ||P f - p_exact|| / ||p_exact||; FBP: PSNR (data range = phantom max) with the ramp filter,
  inside the inscribed circle (scikit-image sets the outside to zero);
- times: best of ``--repeat`` runs, one slice; ours also per slice in a batch of ``--batch`` slices, and the
  sparse-view forward + adjoint pair (what iterative methods call) at 8 views on ``--batch`` slices.

    PYTHONPATH=. python benchmarks/ct_operators.py --size 255 --views 360 60 --batch 16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from models.physics.ct.fbp import filtered_backprojection
from models.physics.ct.geometry import ParallelBeamGeometry
from models.physics.ct.phantom import ellipses_sinogram, rasterise, shepp_logan_ellipses
from models.physics.ct.projector import CTProjector, system_matrices


def best_time(fn, repeat: int) -> float:
    fn()  # warm up (caches, allocations)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(ref.max() ** 2 / np.mean((x - ref) ** 2)))


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def measure(views: int, n: int, phantom: np.ndarray, ellipses: np.ndarray, batch: int, repeat: int,
            astra) -> dict:
    """Projector and FBP error and time of each tool at ``views`` views over 180 degrees."""
    from skimage.transform import iradon, radon

    geom = ParallelBeamGeometry(angles=np.arange(views) * np.pi / views, num_detectors=n, image_shape=(n, n))
    theta_deg = np.rad2deg(geom.angles_array())
    exact = ellipses_sinogram(ellipses, geom)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    circle = (xx**2 + yy**2) <= ((n - 1) / 2) ** 2   # scikit-image zeroes outside it: compare inside only

    def fbp_psnr(image: np.ndarray) -> float:
        return float(10 * np.log10(phantom.max() ** 2 / np.mean((image[circle] - phantom[circle]) ** 2)))

    op = CTProjector(geom)
    t0 = time.perf_counter()
    system_matrices(geom)
    build = time.perf_counter() - t0
    x1 = torch.from_numpy(phantom)[None]
    xb = x1.expand(batch, n, n).contiguous()
    sb = torch.from_numpy(exact)[None]
    sbb = sb.expand(batch, -1, -1).contiguous()
    with torch.no_grad():
        ours_sino = op.forward(x1)[0].numpy()
        ours_fbp = filtered_backprojection(sb, geom)[0].numpy()
        row = {"views": views, "ours": {
            "proj_rel_err": rel_err(ours_sino, exact), "matrix_build_s": build,
            "proj_s": best_time(lambda: op.forward(x1), repeat),
            "proj_s_per_slice_batched": best_time(lambda: op.forward(xb), repeat) / batch,
            "fbp_psnr": fbp_psnr(ours_fbp), "fbp_s": best_time(lambda: filtered_backprojection(sb, geom), repeat),
            "fbp_s_per_slice_batched": best_time(lambda: filtered_backprojection(sbb, geom), repeat) / batch}}
    sk_sino = radon(phantom, -theta_deg, circle=True).T
    sk_fbp = iradon(exact.T, -theta_deg, filter_name="ramp", circle=True, interpolation="linear")
    row["skimage"] = {"proj_rel_err": rel_err(sk_sino, exact),
                      "proj_s": best_time(lambda: radon(phantom, -theta_deg, circle=True), repeat),
                      "fbp_psnr": fbp_psnr(sk_fbp),
                      "fbp_s": best_time(lambda: iradon(exact.T, -theta_deg, filter_name="ramp", circle=True,
                                                        interpolation="linear"), repeat)}
    if astra is None:
        return row
    vg = astra.create_vol_geom(n, n)
    pg = astra.create_proj_geom("parallel", 1.0, n, -geom.angles_array())
    pid = astra.create_projector("linear", pg, vg)

    def astra_fp() -> np.ndarray:
        sid, s = astra.create_sino(phantom, pid)
        astra.data2d.delete(sid)
        return s

    def astra_fbp() -> np.ndarray:
        sid = astra.data2d.create("-sino", pg, exact)
        rid = astra.data2d.create("-vol", vg)
        cfg = astra.astra_dict("FBP")
        cfg.update({"ReconstructionDataId": rid, "ProjectionDataId": sid, "ProjectorId": pid})
        cfg["option"] = {"FilterType": "Ram-Lak"}
        aid = astra.algorithm.create(cfg)
        astra.algorithm.run(aid)
        out = astra.data2d.get(rid)
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
        return out

    a_sino = astra_fp()
    row["astra_vs_ours_max_abs"] = float(np.abs(a_sino - ours_sino).max())
    row["astra"] = {"proj_rel_err": rel_err(a_sino, exact), "proj_s": best_time(astra_fp, repeat),
                    "fbp_psnr": fbp_psnr(astra_fbp()), "fbp_s": best_time(astra_fbp, repeat)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=255)
    parser.add_argument("--views", type=int, nargs="+", default=[360, 60])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: like the single-threaded baselines)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/ct_operators.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    if n % 2 == 0:
        parser.error("--size must be odd (scikit-image rotates about pixel N // 2)")
    try:
        import astra
        astra_version = astra.__version__
    except Exception as err:  # noqa: BLE001 - any failure means: no astra in this run
        astra, astra_version = None, f"unavailable ({err})"

    ellipses = shepp_logan_ellipses()
    phantom = rasterise(ellipses, (1, n, n), supersample=4)[0]
    results: dict = {"size": n, "batch": args.batch, "torch_threads": torch.get_num_threads(),
                     "machine": platform.processor() or platform.machine(), "astra": astra_version, "rows": []}
    for views in args.views:
        row = measure(views, n, phantom, ellipses, args.batch, args.repeat, astra)
        results["rows"].append(row)
        print(json.dumps(row, indent=1), flush=True)

    # the pair iterative methods call: A and A^T at 8 views on a batch of slices
    geom8 = ParallelBeamGeometry(angles=np.arange(8) * np.pi / 8, num_detectors=n, image_shape=(n, n))
    op8 = CTProjector(geom8)
    xb = torch.from_numpy(phantom)[None].expand(args.batch, n, n).contiguous()
    with torch.no_grad():
        pair = best_time(lambda: op8.adjoint(op8.forward(xb)), args.repeat)
    sparse = {"views": 8, "ours_pair_s_per_slice": pair / args.batch}
    if astra is not None:
        vg = astra.create_vol_geom(n, n)
        pg = astra.create_proj_geom("parallel", 1.0, n, -geom8.angles_array())
        pid = astra.create_projector("linear", pg, vg)

        def astra_pair():
            sid, s = astra.create_sino(phantom, pid)
            bid, _ = astra.create_backprojection(s, pid)
            astra.data2d.delete([sid, bid])

        sparse["astra_pair_s_per_slice"] = best_time(astra_pair, args.repeat)
    results["sparse_pair"] = sparse
    print(json.dumps(sparse, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["| views | tool | projector rel. error | projector s/slice | FBP PSNR dB | FBP s/slice |",
             "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        ours = row["ours"]
        lines.append(f"| {row['views']} | ours (Joseph, sparse matrix) | {ours['proj_rel_err']:.4f} | "
                     f"{ours['proj_s']:.4f} (batch of {results['batch']}: {ours['proj_s_per_slice_batched']:.4f}) | "
                     f"{ours['fbp_psnr']:.2f} | {ours['fbp_s']:.3f} (batch: {ours['fbp_s_per_slice_batched']:.3f}) |")
        for tool in ("skimage", "astra"):
            if tool in row:
                r = row[tool]
                lines.append(f"| {row['views']} | {tool} | {r['proj_rel_err']:.4f} | {r['proj_s']:.4f} "
                             f"(ours {r['proj_s'] / ours['proj_s_per_slice_batched']:.1f}x faster batched) | "
                             f"{r['fbp_psnr']:.2f} | {r['fbp_s']:.3f} "
                             f"(ours {r['fbp_s'] / ours['fbp_s_per_slice_batched']:.1f}x faster batched) |")
        lines.append(f"| {row['views']} | (matrix build, once per geometry) | | {ours['matrix_build_s']:.2f} s | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
