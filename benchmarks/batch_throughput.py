"""Batch throughput: slices per second of ``recon batch`` on local worker processes and on Ray actors, 1 and 2
workers each, and Ray's overhead against local at equal workers; plus the per-file costs a scaling model needs.

    PYTHONPATH=. python benchmarks/batch_throughput.py [--files 12] [--size 128] [--rounds 3] [--pipeline mri-rim]

The batch: ``--files`` fastMRI files of simulated brain (held-out test slabs, T2, axial, ``--size``^2, 8 coils,
4 slices, 4x), the same files for every side. Each side runs ``recon_service.batch.run.run_batch`` (what
``recon batch`` runs) into a fresh output folder; inside the timer is the same work on every side: from the first
file handed to the executor until the last file's outputs are published (reading each input, reconstructing,
writing NIfTI, PNG, metrics and the DICOM series, publishing them in the output folder, the status lines). Outside
it and reported apart: the executor's start-up (worker processes or Ray actors up, runner and methods imported;
for Ray also ``ray.init`` of a local Ray), one-time per run. Every side uses the same torch threads per worker
(the cores shared out between the workers). The four sides run in rotated order in each of ``--rounds`` rounds
after a warm-up round; reported are medians, and Ray's overhead as the median over rounds of (Ray seconds / local
seconds - 1) at equal workers, both measured in the same round.

For the scaling model (BENCHMARKS.md): the input and output bytes per file, the driver's serial cost per file
(publishing one file's outputs, median of 20) and the object-store round trip of one input and one output on this
node (``ray.put`` + ``ray.get``, median of 20). Results: benchmarks/results/batch_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "batch_throughput.json"
SIDES = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


def write_inputs(folder: Path, files: int, size: int) -> list[Path]:
    from pipelines.io.fastmri import write_fastmri
    from pipelines.simulate import mri

    cfg = mri.MRISimulationConfig(size=size, coils=8, slices=4)
    starts = mri.slab_starts("axial", "test", cfg)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        acq = mri.simulate_slab("t2", "axial", starts[i % len(starts)], 4.0, cfg, seed=100 + i)
        paths.append(write_fastmri(folder / f"slab_{i:03d}.h5", acq))
    return paths


def run_side(kind: str, workers: int, source: Path, pipeline: str, scratch: Path) -> dict:
    from recon_service.batch.inputs import list_inputs
    from recon_service.batch.run import run_batch
    from recon_service.executors import make_executor

    threads = max(1, (os.cpu_count() or 1) // workers)
    out = scratch / f"{kind}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    executor = make_executor(kind, workers, threads=threads)
    report = run_batch(list_inputs(source), pipeline, out, executor, providers="CPUExecutionProvider")
    assert report.count("done") == len(report.rows), [r for r in report.rows if r["status"] != "done"]
    row = {"executor": kind, "workers": workers, "threads_per_worker": threads, "seconds": report.seconds,
           "startup_seconds": report.startup_seconds, "slices": report.slices,
           "slices_per_second": report.slices_per_second, "mean_psnr": report.mean_metrics().get("psnr")}
    shutil.rmtree(out, ignore_errors=True)
    return row


def file_costs(source: Path, pipeline: str, scratch: Path) -> dict:
    """Bytes in and out per file, the driver's publishing cost and the object-store round trip."""
    import ray

    from recon_service.executors.task import Task, publish_files, run_task, single_input_job

    first = sorted(source.glob("*.h5"))[0]
    outcome = run_task(Task("probe", single_input_job("probe", pipeline, first), first, "CPUExecutionProvider"),
                       None, lambda *_: None)
    assert outcome.status == "ok", outcome.reason
    publish = []
    for i in range(20):
        start = time.perf_counter()
        publish_files(outcome.files, scratch / f"publish-{i}")
        publish.append(time.perf_counter() - start)
    payload = first.read_bytes()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        trips = []
        for _ in range(20):
            start = time.perf_counter()
            ray.get(ray.put(payload))
            ray.get(ray.put(outcome.files))
            trips.append(time.perf_counter() - start)
    finally:
        ray.shutdown()
    return {"input_bytes": len(payload), "output_bytes": outcome.size, "output_files": len(outcome.files),
            "publish_seconds_median": statistics.median(publish),
            "object_store_round_trip_seconds_median": statistics.median(trips),
            "reconstruction_seconds": (outcome.result or {}).get("provenance", {}).get("reconstruction_seconds")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipeline", default="mri-rim")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    try:
        source = scratch / "inputs"
        write_inputs(source, args.files, args.size)
        print(f"{args.files} files of 4 slices, {args.size}^2, 8 coils; pipeline {args.pipeline}", file=sys.stderr)
        print("warm-up round", file=sys.stderr)
        for kind, workers in SIDES:
            run_side(kind, workers, source, args.pipeline, scratch)
        rounds = []
        for r in range(args.rounds):
            order = SIDES[r % len(SIDES):] + SIDES[:r % len(SIDES)]
            rows = {}
            for kind, workers in order:
                rows[f"{kind}-{workers}"] = row = run_side(kind, workers, source, args.pipeline, scratch)
                print(f"round {r + 1}: {kind} x{workers}: {row['slices_per_second']:.2f} slices/s "
                      f"({row['seconds']:.2f} s, start-up {row['startup_seconds']:.2f} s)", file=sys.stderr)
            rounds.append(rows)
        summary = {}
        for kind, workers in SIDES:
            name = f"{kind}-{workers}"
            summary[name] = {
                "executor": kind, "workers": workers,
                "slices_per_second_median": statistics.median(r[name]["slices_per_second"] for r in rounds),
                "seconds_median": statistics.median(r[name]["seconds"] for r in rounds),
                "startup_seconds_median": statistics.median(r[name]["startup_seconds"] for r in rounds),
                "mean_psnr": rounds[0][name]["mean_psnr"]}
        overhead = {f"{w}-workers": statistics.median(r[f"ray-{w}"]["seconds"] / r[f"local-{w}"]["seconds"] - 1
                                                      for r in rounds) for w in (1, 2)}
        scaling = {kind: statistics.median(r[f"{kind}-1"]["seconds"] / r[f"{kind}-2"]["seconds"] for r in rounds)
                   for kind in ("local", "ray")}
        result = {
            "benchmark": "batch_throughput",
            "command": "PYTHONPATH=. python benchmarks/batch_throughput.py " + " ".join(argv or sys.argv[1:]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "date": time.strftime("%Y-%m-%d"),
            "batch": {"files": args.files, "slices_per_file": 4, "size": args.size, "coils": 8,
                      "pipeline": args.pipeline},
            "rounds": args.rounds, "sides": summary, "ray_overhead_vs_local": overhead,
            "speedup_2_vs_1_workers": scaling, "per_file": file_costs(source, args.pipeline, scratch),
            "round_rows": rounds,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        for name, side in summary.items():
            print(f"{name}: {side['slices_per_second_median']:.2f} slices/s, start-up "
                  f"{side['startup_seconds_median']:.2f} s")
        print("Ray overhead vs local: " + ", ".join(f"{k} {v * 100:+.1f}%" for k, v in overhead.items()))
        print(f"results: {args.out}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
