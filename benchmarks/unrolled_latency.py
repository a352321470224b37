"""Per-slice latency of the unrolled networks: torch eager and ONNX Runtime CPU, each with both FFT variants.

    PYTHONPATH=. python benchmarks/unrolled_latency.py [--threads 2] [--repeats 3] [--skip-paper]

Configurations: the shipped models, loaded from the zoo with their weights (checksum verified; 8 coils,
128 x 128), and the paper's RecurrentVarNet (T=8, hidden 128, n_l=4; 12 coils, 218 x 170) with seeded random
weights (none are shipped at that size). Four engines per configuration, on the same input in the same process,
back to back: torch eager with ``torch.fft`` and with the DFT-matrix (matmul) FFT, and ONNX Runtime CPU with the
graph exported with either FFT. So the FFT algorithm's share (eager torch.fft vs eager matmul) and the engine's
share (eager matmul vs ONNX Runtime matmul) are shown apart. The table reports the median over ``--repeats``
calls after one warm-up; exports are one-time costs, reported apart (``export_seconds``) and outside the timer.
Results go to benchmarks/results/unrolled_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models.engine.onnx_export import export_onnx
from models.unrolled import PAPER_CONFIG, build_model, count_parameters
from pipelines.engines import OnnxEngine, example_inputs, parity_psnr
from pipelines.reconstructors import default_models
from pipelines.zoo import load_model


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (ONNX Runtime allocates and optimises on the first run)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, model: torch.nn.Module, weights: str, coils: int, shape: tuple[int, int], threads: int,
          repeats: int, workdir: Path) -> list[dict]:
    inputs = example_inputs(1, coils, shape, seed=3)
    rows = []
    eager: dict[str, float] = {}
    with torch.no_grad():
        model.set_fft_variant("dft-op")  # eager: torch.fft
        reference = model(*inputs)
        for fft, label in (("dft-op", "torch.fft"), ("matmul", "matmul FFT")):
            model.set_fft_variant(fft)
            eager[fft] = _median_seconds(lambda: model(*inputs), repeats)
            rows.append({"config": name, "engine": f"torch eager ({label})", "seconds": eager[fft],
                         "parity_db": parity_psnr(reference, model(*inputs)) if fft == "matmul" else None,
                         "export_seconds": None})
    for fft in ("dft-op", "matmul"):
        model.set_fft_variant(fft)
        start = time.perf_counter()
        path = export_onnx(model, example_inputs(), workdir / f"{name}-{fft}.onnx")
        engine = OnnxEngine(path, ("CPUExecutionProvider",), threads=threads)
        export_seconds = time.perf_counter() - start
        seconds = _median_seconds(lambda engine=engine: engine(*inputs), repeats)
        rows.append({"config": name, "engine": f"ONNX Runtime CPU ({fft} FFT)", "seconds": seconds,
                     "parity_db": parity_psnr(reference, engine(*inputs)), "export_seconds": export_seconds,
                     "ratio_vs_eager_same_fft": eager[fft] / seconds})
    for r in rows:
        r.update(parameters=count_parameters(model), coils=coils, shape=list(shape), weights=weights,
                 ratio_vs_eager_torch_fft=eager["dft-op"] / r["seconds"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/unrolled_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = []
    for model_id in default_models("mri").values():
        model, card = load_model(model_id)  # the shipped weights, checksum verified
        cases.append((f"{model_id} (shipped)", model, f"shipped, sha256 {card['sha256'][:12]}", 8, (128, 128)))
    if not args.skip_paper:
        torch.manual_seed(0)
        paper = build_model("recurrentvarnet", dict(PAPER_CONFIG)).eval()
        cases.append(("recurrentvarnet paper config", paper, "random (seed 0)", 12, (218, 170)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            rows += bench(*case, threads=args.threads, repeats=args.repeats, workdir=Path(tmp))
            print(f"done: {case[0]}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    command = (f"PYTHONPATH=. .venv/bin/python benchmarks/unrolled_latency.py --threads {args.threads} "
               f"--repeats {args.repeats}" + (" --skip-paper" if args.skip_paper else ""))
    Path(args.out).write_text(json.dumps({"command": command, "threads": args.threads, "repeats": args.repeats,
                                          "rows": rows}, indent=2) + "\n")
    print(table(rows))


def table(rows: list[dict]) -> str:
    """The BENCHMARKS.md table of a results file's rows."""
    lines = ["| configuration | weights | coils, matrix | engine | s/slice | vs eager torch.fft | "
             "vs eager, same FFT | parity (dB) | export (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same, export, parity = r.get("ratio_vs_eager_same_fft"), r["export_seconds"], r["parity_db"]
        lines.append(f"| {r['config']} | {r['weights']} | {r['coils']}, {r['shape'][0]}x{r['shape'][1]} | "
                     f"{r['engine']} | {r['seconds']:.3f} | {r['ratio_vs_eager_torch_fft']:.2f}x | "
                     f"{'' if same is None else f'{same:.2f}x'} | {'' if parity is None else round(parity)} | "
                     f"{'' if export is None else f'{export:.0f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
