"""CT projector and FBP: accuracy and time of ours against scikit-image (radon/iradon) and astra-toolbox (CPU).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ct_operators.py [--size 255] [--views 360 60] [--batch 16]

One process, every tool on the same data and the same work, back to back (protocol: benchmarks/README.md):

- phantom: the 2D modified Shepp-Logan at N x N (odd N, so every tool puts the rotation centre on the same
  pixel), pixel-averaged with 4 x 4 supersampling; the exact parallel-beam line integrals of its ellipses are the
  projector's ground truth, the phantom itself the FBP's;
- conventions: our angle theta is scikit-image's and astra's ``-theta`` (checked: the largest difference between
  our Joseph projector and astra's ``linear`` projector is recorded);
- projector error: ||P f - p_exact|| / ||p_exact||; FBP: PSNR (data range = phantom max) with the ramp filter,
  inside the inscribed circle (scikit-image sets the outside to zero);
- times: median of ``--repeats`` rounds after one warm-up call, torch on one thread (scikit-image and astra's CPU
  code are single-threaded); each round calls every tool once, back to back. Each operation is timed on one
  slice and on a batch of ``--batch`` slices; the peers, which take one slice per call, loop over the batch, so
  both sides do the same work. Batched figures are seconds per batch, never divided into per-slice figures;
- our sparse system matrix is built once per geometry: that one-time build is timed apart (its first, cold
  call) and is outside every other timer; FBP and the peers need no matrix;
- the forward + adjoint pair iterative methods call, at 8 views (peers: radon + unfiltered iradon for
  scikit-image, create_sino + create_backprojection for astra).

Results go to benchmarks/results/ct_operators.json; the markdown tables are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.physics.ct.fbp import filtered_backprojection
from models.physics.ct.geometry import ParallelBeamGeometry
from models.physics.ct.phantom import ellipses_sinogram, rasterise, shepp_logan_ellipses
from models.physics.ct.projector import CTProjector, system_matrices

Work = Callable[[], Any]
# operation -> tool -> (one slice, the batch)
Calls = dict[str, dict[str, tuple[Work, Work]]]


def interleaved_seconds(fns: dict[str, Work], repeats: int) -> dict[str, list[float]]:
    """Wall times of ``repeats`` rounds after one warm-up call each; every round calls each function once, back
    to back, so a change in the machine's load falls on all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def geometry(views: int, n: int) -> ParallelBeamGeometry:
    return ParallelBeamGeometry(angles=np.arange(views) * np.pi / views, num_detectors=n, image_shape=(n, n))


def load_astra() -> tuple[Any, str]:
    """astra-toolbox's module and version, or None and why not."""
    try:
        import astra
    except Exception as err:  # noqa: BLE001 - any failure means: no astra in this run
        return None, f"unavailable ({type(err).__name__}: {err})"
    return astra, astra.__version__


class Astra:
    """astra-toolbox's CPU ``linear`` (Joseph) projector and FBP for one geometry, one slice per call."""

    def __init__(self, astra: Any, geom: ParallelBeamGeometry):
        n = geom.image_shape[0]
        self.astra = astra
        self.vg = astra.create_vol_geom(n, n)
        self.pg = astra.create_proj_geom("parallel", 1.0, geom.num_detectors, -geom.angles_array())
        self.pid = astra.create_projector("linear", self.pg, self.vg)

    def forward(self, image: np.ndarray) -> np.ndarray:
        sid, sino = self.astra.create_sino(image, self.pid)
        self.astra.data2d.delete(sid)
        return sino

    def adjoint(self, sino: np.ndarray) -> np.ndarray:
        bid, image = self.astra.create_backprojection(sino, self.pid)
        self.astra.data2d.delete(bid)
        return image

    def fbp(self, sino: np.ndarray) -> np.ndarray:
        a = self.astra
        sid, rid = a.data2d.create("-sino", self.pg, sino), a.data2d.create("-vol", self.vg)
        cfg = a.astra_dict("FBP")
        cfg.update({"ReconstructionDataId": rid, "ProjectionDataId": sid, "ProjectorId": self.pid,
                    "option": {"FilterType": "Ram-Lak"}})
        aid = a.algorithm.create(cfg)
        a.algorithm.run(aid)
        out = a.data2d.get(rid)
        a.algorithm.delete(aid)
        a.data2d.delete([sid, rid])
        return out


def batched(fn: Callable[[np.ndarray], Any], items: np.ndarray) -> Work:
    """The peers take one slice per call: the batch is a loop over it."""
    return lambda: [fn(item) for item in items]


def dense_calls(geom: ParallelBeamGeometry, phantom: np.ndarray, sino: np.ndarray, batch: int,
                astra: Any) -> Calls:
    """Projector and FBP of each tool on one slice and on ``batch`` slices."""
    from skimage.transform import iradon, radon

    theta = -np.rad2deg(geom.angles_array())
    op = CTProjector(geom)
    x1, s1 = torch.from_numpy(phantom)[None], torch.from_numpy(sino)[None]
    xb, sb = x1.expand(batch, -1, -1).contiguous(), s1.expand(batch, -1, -1).contiguous()
    phantoms, sinos = np.repeat(phantom[None], batch, 0), np.repeat(sino[None], batch, 0)

    def sk_fbp(s: np.ndarray) -> np.ndarray:
        return iradon(s.T, theta, filter_name="ramp", circle=True, interpolation="linear")

    def sk_radon(image: np.ndarray) -> np.ndarray:
        return radon(image, theta, circle=True).T

    calls: Calls = {
        "projector": {"ours": (lambda: op.forward(x1), lambda: op.forward(xb)),
                      "scikit-image": (lambda: sk_radon(phantom), batched(sk_radon, phantoms))},
        "fbp": {"ours": (lambda: filtered_backprojection(s1, geom), lambda: filtered_backprojection(sb, geom)),
                "scikit-image": (lambda: sk_fbp(sino), batched(sk_fbp, sinos))}}
    if astra is not None:
        a = Astra(astra, geom)
        calls["projector"]["astra"] = (lambda: a.forward(phantom), batched(a.forward, phantoms))
        calls["fbp"]["astra"] = (lambda: a.fbp(sino), batched(a.fbp, sinos))
    return calls


def pair_calls(geom: ParallelBeamGeometry, phantom: np.ndarray, batch: int, astra: Any) -> Calls:
    """Forward + adjoint (unfiltered backprojection) of each tool on one slice and on ``batch`` slices."""
    from skimage.transform import iradon, radon

    theta = -np.rad2deg(geom.angles_array())
    op = CTProjector(geom)
    x1 = torch.from_numpy(phantom)[None]
    xb = x1.expand(batch, -1, -1).contiguous()
    phantoms = np.repeat(phantom[None], batch, 0)

    def sk_pair(image: np.ndarray) -> np.ndarray:
        return iradon(radon(image, theta, circle=True), theta, filter_name=None, circle=True,
                      interpolation="linear")

    tools = {"ours": (lambda: op.adjoint(op.forward(x1)), lambda: op.adjoint(op.forward(xb))),
             "scikit-image": (lambda: sk_pair(phantom), batched(sk_pair, phantoms))}
    if astra is not None:
        a = Astra(astra, geom)

        def astra_pair(image: np.ndarray) -> np.ndarray:
            return a.adjoint(a.forward(image))

        tools["astra"] = (lambda: astra_pair(phantom), batched(astra_pair, phantoms))
    return {"forward+adjoint": tools}


def time_calls(calls: Calls, views: int, batch: int, repeats: int) -> list[dict]:
    """Timing rows, medians over the rounds; ``ratio_vs_ours`` = the tool's median / ours on the same work
    (above 1: ours faster)."""
    rows = []
    with torch.no_grad():
        for operation, tools in calls.items():
            for slices, index in ((1, 0), (batch, 1)):
                times = interleaved_seconds({tool: fns[index] for tool, fns in tools.items()}, repeats)
                median = {tool: statistics.median(t) for tool, t in times.items()}
                rows += [{"views": views, "operation": operation, "slices": slices, "tool": tool,
                          "seconds": median[tool], "seconds_all": times[tool],
                          "ratio_vs_ours": median[tool] / median["ours"]} for tool in times]
    return rows


def matrix_build(geom: ParallelBeamGeometry) -> dict:
    """The one-time cost of our projector: the cold build of the geometry's (A, A^T) pair."""
    start = time.perf_counter()
    a, _ = system_matrices(geom)
    return {"views": len(geom.angles_array()), "seconds": time.perf_counter() - start, "nnz": int(a.values().numel())}


def accuracy(geom: ParallelBeamGeometry, phantom: np.ndarray, exact: np.ndarray, astra: Any) -> list[dict]:
    """Projector relative error against the exact line integrals and FBP PSNR inside the inscribed circle."""
    n = phantom.shape[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    circle = (xx**2 + yy**2) <= ((n - 1) / 2) ** 2

    def fbp_psnr(image: np.ndarray) -> float:
        return float(10 * np.log10(phantom.max() ** 2 / np.mean((image[circle] - phantom[circle]) ** 2)))

    calls = dense_calls(geom, phantom, exact, 1, astra)
    views = len(geom.angles_array())
    rows = []
    with torch.no_grad():
        for tool in calls["projector"]:
            sino, image = calls["projector"][tool][0](), calls["fbp"][tool][0]()
            sino, image = (np.asarray(v[0] if isinstance(v, torch.Tensor) else v) for v in (sino, image))
            rows.append({"views": views, "tool": tool, "projector_rel_err": rel_err(sino, exact),
                         "fbp_psnr": fbp_psnr(image), "sinogram": sino})
    ours = next(r["sinogram"] for r in rows if r["tool"] == "ours")
    for r in rows:
        sino = r.pop("sinogram")
        if r["tool"] == "astra":
            r["max_abs_diff_vs_ours"] = float(np.abs(sino - ours).max())
    return rows


def run(args: argparse.Namespace, astra: Any) -> dict:
    n = args.size
    ellipses = shepp_logan_ellipses()
    phantom = rasterise(ellipses, (1, n, n), supersample=4)[0]
    builds, quality, timings = [], [], []
    for views in args.views:
        geom = geometry(views, n)
        builds.append(matrix_build(geom))
        exact = ellipses_sinogram(ellipses, geom).astype(np.float32)
        quality += accuracy(geom, phantom, exact, astra)
        timings += time_calls(dense_calls(geom, phantom, exact, args.batch, astra), views, args.batch, args.repeats)
        print(f"done: {views} views", flush=True)
    geom = geometry(args.pair_views, n)
    builds.append(matrix_build(geom))
    timings += time_calls(pair_calls(geom, phantom, args.batch, astra), args.pair_views, args.batch, args.repeats)
    return {"matrix_build": builds, "accuracy": quality, "timing": timings}


def command_line(args: argparse.Namespace) -> str:
    return (f"OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/ct_operators.py --size {args.size} "
            f"--views {' '.join(map(str, args.views))} --pair-views {args.pair_views} --batch {args.batch} "
            f"--repeats {args.repeats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=255)
    parser.add_argument("--views", type=int, nargs="+", default=[360, 60])
    parser.add_argument("--pair-views", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ct_operators.json"))
    args = parser.parse_args()
    if args.size % 2 == 0:
        parser.error("--size must be odd (scikit-image rotates about pixel N // 2)")
    torch.set_num_threads(1)
    astra, astra_version = load_astra()
    import skimage

    start, load = time.perf_counter(), os.getloadavg()
    results = run(args, astra)
    out = {"command": command_line(args), "size": args.size, "batch": args.batch, "repeats": args.repeats,
           "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "load_average": {"start": load, "end": os.getloadavg()}, "versions": {"torch": torch.__version__,
           "scikit-image": skimage.__version__, "astra-toolbox": astra_version},
           "wall_seconds": time.perf_counter() - start, **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(markdown(out))


def timing_table(results: dict) -> list[str]:
    """One row per operation, view count and slice count; each peer's median with its ratio to ours."""
    peers = [t for t in ("scikit-image", "astra") if any(r["tool"] == t for r in results["timing"])]
    lines = ["| views | operation | slices | ours (s) | " + " | ".join(f"{p} (s, / ours)" for p in peers) + " |",
             "|---|---|---|---|" + "---|" * len(peers)]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in results["timing"]:
        groups.setdefault((r["views"], r["operation"], r["slices"]), {})[r["tool"]] = r
    for (views, operation, slices), tools in groups.items():
        cells = [f"{tools[p]['seconds']:.3f} ({tools[p]['ratio_vs_ours']:.2f}x)" for p in peers]
        lines.append(f"| {views} | {operation} | {slices} | {tools['ours']['seconds']:.3f} | {' | '.join(cells)} |")
    return lines


def markdown(results: dict) -> str:
    """The BENCHMARKS.md tables of a results file."""
    lines = ["| views | tool | projector rel. error | FBP PSNR (dB) |", "|---|---|---|---|"]
    lines += [f"| {r['views']} | {r['tool']} | {r['projector_rel_err']:.4f} | {r['fbp_psnr']:.2f} |"
              for r in results["accuracy"]]
    lines += ["", *timing_table(results)]
    lines += ["", "| views | our matrix build, once per geometry (s) | non-zeros |", "|---|---|---|"]
    lines += [f"| {b['views']} | {b['seconds']:.1f} | {b['nnz']:,} |" for b in results["matrix_build"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
