"""GPU engines of every shipped model: ONNX Runtime CUDA and TensorRT (with its engine cache) against the CPU
engine, parity and latency. Run by scripts/gpu_check.sh on a GPU machine; no test needs it.

    PYTHONPATH=. python benchmarks/gpu_engines.py [--repeats 20] [--size 128] [--write-benchmarks]

For each ONNX engine in the zoo (``models/zoo/*/*.onnx``), one seeded input at ``--size``^2 (MRI networks: 8 coils
and a 4x column mask; diffusion priors: a batch of 4 slices), then per provider:

* ``build_seconds``: creating the session (TensorRT: building the engine into an empty cache), apart from latency;
* ``cached_build_seconds`` (TensorRT only): a second session, which loads the engine from the cache;
* ``seconds``: median of ``--repeats`` runs after 3 warm-up runs;
* ``parity_db``: PSNR of the provider's output against the CPU provider's, in dB (peak: the CPU output's maximum
  magnitude). TensorRT runs FP32 here (no FP16), so parity is expected far above 40 dB.

Results: benchmarks/results/gpu_engines.json; with ``--write-benchmarks`` also the table in BENCHMARKS.md between the
``gpu-engines`` markers.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpu_engines.json"
PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")


def model_inputs(session, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:  # noqa: ANN001
    """A seeded input for an engine, by its input names (the zoo's two engine signatures)."""
    names = {i.name for i in session.get_inputs()}
    if "masked_kspace" in names:  # RecurrentVarNet, RIM: (1, coils, H, W, 2)
        coils = 8
        mask = np.zeros((1, 1, size, size, 1), np.float32)
        mask[..., ::4, :] = 1
        mask[..., size // 2 - 8:size // 2 + 8, :] = 1
        maps = rng.standard_normal((1, coils, size, size, 2)).astype(np.float32)
        maps /= np.sqrt((maps ** 2).sum(axis=(1, 4), keepdims=True))
        kspace = rng.standard_normal((1, coils, size, size, 2)).astype(np.float32) * mask
        return {"masked_kspace": kspace, "mask": mask, "sens_maps": maps}
    batch = 4
    channels = next(i.shape[1] for i in session.get_inputs() if i.name == "x")
    out = {"x": rng.standard_normal((batch, channels, size, size)).astype(np.float32)}
    if "timesteps" in names:  # the CT prior
        out["timesteps"] = rng.integers(0, 1000, size=batch).astype(np.int64)
    if "sigma" in names:  # the MRI priors
        out["sigma"] = np.full(batch, 0.5, np.float32)
        out["mask"] = (rng.random((batch, 1, size, size)) < 0.3).astype(np.float32)
    return out


def time_session(session, feed: dict, repeats: int) -> tuple[float, np.ndarray]:  # noqa: ANN001
    for _ in range(3):
        output = session.run(None, feed)[0]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = session.run(None, feed)[0]
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def parity_db(reference: np.ndarray, other: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - other) ** 2))
    peak = float(np.abs(reference).max())
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def measure(path: Path, size: int, repeats: int, cache: Path) -> list[dict]:
    from models.engine.session import create_session

    rows, reference = [], None
    feed = None
    for provider in PROVIDERS:
        trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache / path.parent.name)}
        start = time.perf_counter()
        session, active = create_session(path, providers_preference=(provider,), trt_options=trt)
        build = time.perf_counter() - start
        if active != provider:
            rows.append({"model": path.parent.name, "engine": path.name, "provider": provider,
                         "error": f"not available (the session fell back to {active})"})
            continue
        if feed is None:
            feed = model_inputs(session, size, np.random.default_rng(0))
        seconds, output = time_session(session, feed, repeats)
        row = {"model": path.parent.name, "engine": path.name, "provider": provider, "build_seconds": build,
               "seconds": seconds}
        if provider == "TensorrtExecutionProvider":
            start = time.perf_counter()
            create_session(path, providers_preference=(provider,), trt_options=trt)
            row["cached_build_seconds"] = time.perf_counter() - start
        if reference is None:
            reference = output
        row["parity_db"] = parity_db(reference, output)
        row["ratio_vs_cpu"] = rows[0]["seconds"] / seconds if rows and "seconds" in rows[0] else 1.0
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    lines = [f"Figures from `benchmarks/results/gpu_engines.json` ({result['device']}, onnxruntime "
             f"{result['onnxruntime']}, {result['date']}; `bash scripts/gpu_check.sh`). Input {result['size']}^2.",
             "", "| model | provider | session / engine build (s) | from cache (s) | latency (ms) | vs CPU "
                 "| parity (dB) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['provider']} | {r['error']} | | | | |")
            continue
        cached = f"{r['cached_build_seconds']:.2f}" if "cached_build_seconds" in r else "-"
        lines.append(f"| {r['model']} | {r['provider']} | {r['build_seconds']:.2f} | {cached} | "
                     f"{r['seconds'] * 1000:.1f} | {r['ratio_vs_cpu']:.1f}x | {r['parity_db']:.1f} |")
    return "\n".join(lines)


def write_benchmarks(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    block = f"<!-- gpu-engines:begin -->\n{text}\n<!-- gpu-engines:end -->"
    pattern = re.compile(r"<!-- gpu-engines:begin -->.*?<!-- gpu-engines:end -->", re.S)
    path.write_text(pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + block + "\n")


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--write-benchmarks", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("this onnxruntime has no CUDA provider: install onnxruntime-gpu (the CUDA image has it)", file=sys.stderr)
        return 2
    from pipelines.zoo import ZOO_DIR

    engines = sorted(ZOO_DIR.glob("*/*.onnx"))
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for path in engines:
            print(f"{path.parent.name}/{path.name}", file=sys.stderr)
            rows += measure(path, args.size, args.repeats, Path(cache))
    try:
        import torch

        device = torch.cuda.get_device_name(0)
    except Exception:  # the name is a label only
        device = "GPU"
    result = {"benchmark": "gpu_engines",
              "command": "PYTHONPATH=. python benchmarks/gpu_engines.py " + " ".join(argv or sys.argv[1:]),
              "device": device, "onnxruntime": ort.__version__, "date": time.strftime("%Y-%m-%d"),
              "size": args.size, "repeats": args.repeats, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    if args.write_benchmarks:
        write_benchmarks(markdown(result))
    bad = [r for r in rows if r.get("parity_db", 100) < 40]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
