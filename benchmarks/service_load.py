"""Load test of the HTTP service on loopback: concurrent submissions, none lost or failed, and the overhead.

    PYTHONPATH=. python benchmarks/service_load.py [--jobs 50] [--workers 2] [--pipeline mri-cg-sense]

One simulated brain MRI file (8 coils, 128 x 128, 4 slices, 4x; test split) is reconstructed

* directly, in this process, with ``pipelines.pipeline.reconstruct_file`` (``--direct-runs`` times, with the
  torch thread count a service worker gets: cores // workers), and
* through a fresh ``recon serve`` on loopback (SQLite job store, ``--workers`` worker processes): first one job
  at a time (submit -> poll -> download the DICOM zip, ``--single-runs`` times), then ``--jobs`` submissions
  sent at once from as many client threads.

Reported: every job's final state (all must be succeeded, none lost), the single-job latency ratio
(service end-to-end / direct, medians of the same run), and the burst ratio (wall time of the burst per job /
direct time per job: below 1 when the workers overlap jobs, above 1 when the service costs more than it
gains). Results go to benchmarks/out/service_load.json.
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

from recon_service.local_server import LocalServer


def simulate_input(out: Path) -> Path:
    from pipelines.io.fastmri import write_fastmri
    from pipelines.simulate import mri

    cfg = mri.MRISimulationConfig(size=128, coils=8, slices=4)
    spec = mri.plan("test", ("t1",), ("axial",), (4.0,), cfg, max_files=1)[0]
    _, acq = next(iter(mri.simulate([spec], cfg)))
    return write_fastmri(out / spec.file_name, acq)


def direct_seconds(path: Path, method: str, runs: int, out: Path, threads: int) -> list[float]:
    import torch

    from pipelines.pipeline import reconstruct_file

    torch.set_num_threads(threads)

    reconstruct_file(path, method, out / "warmup")  # imports, caches
    times = []
    for i in range(runs):
        start = time.perf_counter()
        reconstruct_file(path, method, out / f"direct-{i}")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pipeline", default="mri-cg-sense")
    parser.add_argument("--direct-runs", type=int, default=5)
    parser.add_argument("--single-runs", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/out/service_load.json")
    args = parser.parse_args()
    method = args.pipeline.split("-", 1)[1]

    with tempfile.TemporaryDirectory(prefix="recon-load-") as tmp:
        tmp = Path(tmp)
        path = simulate_input(tmp)
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        direct = direct_seconds(path, method, args.direct_runs, tmp / "direct", threads)
        t_direct = statistics.median(direct)
        print(f"direct {method}: median {t_direct:.3f} s over {len(direct)} runs ({threads} torch thread(s))")

        with LocalServer(tmp / "service", workers=args.workers) as server, server.client() as client:
            single = []
            for i in range(args.single_runs):
                start = time.perf_counter()
                job = client.wait(client.submit([path], args.pipeline)["id"], interval=0.05)
                client.download(job["id"], "dicom", tmp / f"single-{i}.zip")
                single.append(time.perf_counter() - start)
                assert job["state"] == "succeeded", job
            t_single = statistics.median(single)
            print(f"service, one job at a time: median {t_single:.3f} s end to end (ratio {t_single / t_direct:.2f})")

            def submit_and_wait(i: int) -> tuple[str, str, float]:
                start = time.perf_counter()
                with server.client() as own:
                    job_id = own.submit([path], args.pipeline, idempotency_key=f"load-{i}")["id"]
                    status = own.wait(job_id, timeout=3600, interval=0.25)
                return job_id, status["state"], time.perf_counter() - start

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                outcomes = list(pool.map(submit_and_wait, range(args.jobs)))
            burst = time.perf_counter() - start
            listed = {j["id"]: j["state"] for j in client.jobs(limit=500)}

    ids = [job_id for job_id, _, _ in outcomes]
    states = [state for _, state, _ in outcomes]
    lost = [job_id for job_id in ids if job_id not in listed]
    not_succeeded = [(job_id, state) for job_id, state, _ in outcomes if state != "succeeded"]
    latencies = sorted(t for _, _, t in outcomes)
    burst_ratio = burst / (args.jobs * t_direct)
    result = {
        "pipeline": args.pipeline, "jobs": args.jobs, "workers": args.workers, "direct_threads": threads,
        "direct_seconds": direct, "direct_median": t_direct,
        "single_job_seconds": single, "single_job_median": t_single, "single_job_ratio": t_single / t_direct,
        "burst_wall_seconds": burst, "burst_seconds_per_job": burst / args.jobs,
        "burst_latency_median": statistics.median(latencies), "burst_latency_max": latencies[-1],
        "burst_ratio": burst_ratio, "distinct_jobs": len(set(ids)),
        "states": {s: states.count(s) for s in sorted(set(states))}, "lost": lost, "not_succeeded": not_succeeded,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{args.jobs} concurrent submissions: {result['states']}, lost {len(lost)}, distinct {len(set(ids))}")
    print(f"burst wall {burst:.1f} s = {burst / args.jobs:.3f} s/job ({args.workers} workers); ratio to direct "
          f"{burst_ratio:.2f}; latency median {result['burst_latency_median']:.1f} s, max {latencies[-1]:.1f} s")
    if lost or not_succeeded or len(set(ids)) != args.jobs:
        raise SystemExit("jobs were lost or failed")


if __name__ == "__main__":
    main()
