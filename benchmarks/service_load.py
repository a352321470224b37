"""Load test of the HTTP service on loopback: concurrent submissions, none lost or failed, and the overhead.

    PYTHONPATH=. python benchmarks/service_load.py [--jobs 50] [--workers 2] [--pipeline mri-cg-sense]

One simulated brain MRI file (8 coils, 128 x 128, 4 slices, 4x; test split) is reconstructed

* directly, in this process, with ``pipelines.pipeline.reconstruct_file`` (reading, reconstruction, NIfTI and
  PNG outputs; with the torch thread count a service worker gets: cores // workers), and
* through a fresh ``recon serve`` on loopback (SQLite job store, ``--workers`` worker processes), one job at a
  time: submit -> poll every 50 ms -> download the DICOM zip.

The two alternate, back to back, for ``--runs`` rounds after one warm-up of each, so a change in the machine's
load falls on both alike. Then ``--jobs`` submissions are sent at once from as many client threads.

Reported: every job's final state (all must be succeeded, none lost), the single-job ratio (service end-to-end
/ direct, medians over the same rounds), and the burst ratio (wall time of the burst per job / direct median:
below 1 when the workers overlap jobs, above 1 when the service costs more than it gains). Results go to
benchmarks/results/service_load.json with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from recon_service.local_server import LocalServer


def simulate_input(out: Path) -> Path:
    from pipelines.io.fastmri import write_fastmri
    from pipelines.simulate import mri

    cfg = mri.MRISimulationConfig(size=128, coils=8, slices=4)
    spec = mri.plan("test", ("t1",), ("axial",), (4.0,), cfg, max_files=1)[0]
    _, acq = next(iter(mri.simulate([spec], cfg)))
    return write_fastmri(out / spec.file_name, acq)


Outcome = tuple[str, str, float]  # job id, final state, seconds from submission to the final state


def direct_run(path: Path, method: str, out: Path) -> float:
    """Seconds of one reconstruction in this process, file to outputs."""
    from pipelines.pipeline import reconstruct_file

    start = time.perf_counter()
    reconstruct_file(path, method, out)
    return time.perf_counter() - start


def service_run(client: Any, path: Path, pipeline: str, out: Path) -> float:
    """End-to-end seconds of one job through the service: submit, poll every 50 ms, download the DICOM zip."""
    start = time.perf_counter()
    job = client.wait(client.submit([path], pipeline)["id"], interval=0.05)
    client.download(job["id"], "dicom", out)
    seconds = time.perf_counter() - start
    if job["state"] != "succeeded":
        raise SystemExit(f"single job did not succeed: {job}")
    return seconds


def paired_seconds(client: Any, path: Path, method: str, pipeline: str, runs: int,
                   out: Path) -> tuple[list[float], list[float]]:
    """Direct and service seconds, alternating, ``runs`` rounds after one warm-up of each (imports, caches)."""
    direct, service = [], []
    for i in range(runs + 1):
        d = direct_run(path, method, out / f"direct-{i}")
        s = service_run(client, path, pipeline, out / f"single-{i}.zip")
        if i:
            direct.append(d)
            service.append(s)
    return direct, service


def burst(server: LocalServer, path: Path, pipeline: str, jobs: int) -> tuple[list[Outcome], float]:
    """``jobs`` submissions at once from as many client threads; each waits for its job's final state."""

    def submit_and_wait(i: int) -> Outcome:
        start = time.perf_counter()
        with server.client() as own:
            job_id = own.submit([path], pipeline, idempotency_key=f"load-{i}")["id"]
            status = own.wait(job_id, timeout=3600, interval=0.25)
        return job_id, status["state"], time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(submit_and_wait, range(jobs)))
    return outcomes, time.perf_counter() - start


def summarise(args: argparse.Namespace, threads: int, direct: list[float], single: list[float],
              outcomes: list[Outcome], wall: float, listed: dict[str, str]) -> dict[str, Any]:
    """The results file's figures; ratios are against the direct median of the same run."""
    ids = [job_id for job_id, _, _ in outcomes]
    states = [state for _, state, _ in outcomes]
    latencies = sorted(t for _, _, t in outcomes)
    t_direct, t_single = statistics.median(direct), statistics.median(single)
    return {
        "pipeline": args.pipeline, "jobs": args.jobs, "workers": args.workers, "direct_threads": threads,
        "direct_seconds": direct, "direct_median": t_direct,
        "single_job_seconds": single, "single_job_median": t_single, "single_job_ratio": t_single / t_direct,
        "burst_wall_seconds": wall, "burst_seconds_per_job": wall / args.jobs,
        "burst_latency_median": statistics.median(latencies), "burst_latency_max": latencies[-1],
        "burst_ratio": wall / (args.jobs * t_direct), "distinct_jobs": len(set(ids)),
        "states": {s: states.count(s) for s in sorted(set(states))},
        "lost": [job_id for job_id in ids if job_id not in listed],
        "not_succeeded": [(job_id, state) for job_id, state, _ in outcomes if state != "succeeded"],
    }


def command_line(args: argparse.Namespace) -> str:
    return (f"PYTHONPATH=. .venv/bin/python benchmarks/service_load.py --jobs {args.jobs} --workers {args.workers} "
            f"--pipeline {args.pipeline} --runs {args.runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pipeline", default="mri-cg-sense")
    parser.add_argument("--runs", type=int, default=5, help="rounds of one direct run and one service job")
    parser.add_argument("--out", default="benchmarks/results/service_load.json")
    args = parser.parse_args()
    method = args.pipeline.split("-", 1)[1]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="recon-load-") as tmp:
        tmp = Path(tmp)
        path = simulate_input(tmp)
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        torch.set_num_threads(threads)
        with LocalServer(tmp / "service", workers=args.workers) as server, server.client() as client:
            direct, single = paired_seconds(client, path, method, args.pipeline, args.runs, tmp)
            print(f"direct {method}: median {statistics.median(direct):.3f} s ({threads} torch thread(s)); "
                  f"service one job: median {statistics.median(single):.3f} s", flush=True)
            outcomes, wall = burst(server, path, args.pipeline, args.jobs)
            listed = {j["id"]: j["state"] for j in client.jobs(limit=500)}
    result = {"command": command_line(args), "cpus": os.cpu_count(),
              **summarise(args, threads, direct, single, outcomes, wall, listed),
              "load_average": {"start": load, "end": os.getloadavg()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"service, one job at a time: median {result['single_job_median']:.3f} s end to end "
          f"(ratio {result['single_job_ratio']:.2f})")
    print(f"{args.jobs} concurrent submissions: {result['states']}, lost {len(result['lost'])}, "
          f"distinct {result['distinct_jobs']}")
    print(f"burst wall {wall:.1f} s = {result['burst_seconds_per_job']:.3f} s/job ({args.workers} workers); ratio "
          f"to direct {result['burst_ratio']:.2f}; latency median {result['burst_latency_median']:.1f} s, "
          f"max {result['burst_latency_max']:.1f} s")
    if result["lost"] or result["not_succeeded"] or result["distinct_jobs"] != args.jobs:
        raise SystemExit("jobs were lost or failed")


if __name__ == "__main__":
    main()
