"""Per-slice latency of the unrolled networks: torch eager vs ONNX Runtime CPU (DFT op / matmul FFT).

    PYTHONPATH=. python benchmarks/unrolled_latency.py [--threads 2] [--repeats 3] [--skip-paper]

Configurations: the shipped models (their cards' architecture, 8 coils, 128 x 128) and the paper's
RecurrentVarNet (T=8, hidden 128, n_l=4; 12 coils, 218 x 170) with random weights (latency does not
depend on the weights). Every engine runs the same input in the same process, back to back; the table
reports the median over ``--repeats`` calls after one warm-up, and each engine's ratio to torch eager.
Results go to benchmarks/out/unrolled_latency.json.
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
from pipelines.zoo import load_card


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (ONNX Runtime allocates and optimises on the first run)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, kind: str, config: dict, coils: int, shape: tuple[int, int], threads: int,
          repeats: int, workdir: Path) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(kind, config).eval()
    inputs = example_inputs(1, coils, shape, seed=3)
    rows = []
    with torch.no_grad():
        model.set_fft_variant("dft-op")
        reference = model(*inputs)
        eager = _median_seconds(lambda: model(*inputs), repeats)
    rows.append({"config": name, "engine": "torch eager (torch.fft)", "seconds": eager, "ratio_vs_eager": 1.0,
                 "parity_db": None})
    for fft in ("dft-op", "matmul"):
        model.set_fft_variant(fft)
        path = export_onnx(model, example_inputs(), workdir / f"{name}-{fft}.onnx")
        engine = OnnxEngine(path, ("CPUExecutionProvider",), threads=threads)
        seconds = _median_seconds(lambda engine=engine: engine(*inputs), repeats)
        rows.append({"config": name, "engine": f"ONNX Runtime CPU ({fft} FFT)", "seconds": seconds,
                     "ratio_vs_eager": eager / seconds, "parity_db": parity_psnr(reference, engine(*inputs))})
    for r in rows:
        r.update(parameters=count_parameters(model), coils=coils, shape=list(shape))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--out", default="benchmarks/out/unrolled_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = []
    for kind, model_id in default_models().items():
        card = load_card(model_id)
        cases.append((f"{model_id} (shipped)", kind, card["config"], 8, (128, 128)))
    if not args.skip_paper:
        cases.append(("recurrentvarnet paper config", "recurrentvarnet", dict(PAPER_CONFIG), 12, (218, 170)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            rows += bench(*case, threads=args.threads, repeats=args.repeats, workdir=Path(tmp))
            print(f"done: {case[0]}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    print("| configuration | coils, matrix | engine | s/slice | speed-up vs eager | parity (dB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        parity = "" if r["parity_db"] is None else f"{r['parity_db']:.0f}"
        print(f"| {r['config']} | {r['coils']}, {r['shape'][0]}x{r['shape'][1]} | {r['engine']} | "
              f"{r['seconds']:.3f} | {r['ratio_vs_eager']:.2f}x | {parity} |")


if __name__ == "__main__":
    main()
