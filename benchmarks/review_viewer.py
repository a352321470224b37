"""The review tool on a large study: time to the first image of a 64-slice 256 x 256 series, and no refetching.

    PYTHONPATH=. python benchmarks/review_viewer.py [--slices 64] [--size 256] [--opens 5]

A real ``recon serve`` on loopback with one succeeded learned job whose results hold ``--slices`` slices of
``--size``^2 in four panes (learned reconstruction, zero-filled, classical, reference: 4 x 64 x 256 x 256 float32),
written by the service's own result writer; Debian's Chromium, headless, driven by Playwright. Each of ``--opens``
rounds uses a fresh browser context (empty cache): sign in, click the job in the worklist, and time until the
first image is painted in both default panes (the tool's own ``reviewStats.firstImageMs``, from the click handler
to the end of the first paint, and the wall time seen from here). Then the whole series is scrolled to the end and
back, and the slices fetched are counted: each (pane, slice) must be fetched exactly once. Results:
benchmarks/results/review_viewer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.data import ImageVolume
from pipelines.io.dicom_series import Provenance
from pipelines.io.dicom_study import StudyInfo
from recon_service.context import ServiceContext
from recon_service.jobs.results import DicomSeries, write_results
from recon_service.jobs.store import JobState, NewInput
from recon_service.local_server import LocalServer
from recon_service.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "review_viewer.json"
TOKEN = "bench:jobs:read,review"


def large_job(data_dir: Path, slices: int, size: int) -> str:
    context = ServiceContext.create(Settings(data_dir=data_dir))
    job, _ = context.store.create("mri-rim", [NewInput("in.h5", "uploads/x/in.h5", 1, "0" * 64, "fastmri")],
                                  "bench", study={"PatientName": "Large^Study"})
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    head = (xx**2 + yy**2 < 0.18).astype(np.float32)
    volume = np.stack([head * (1 + 0.1 * np.sin(k / 5)) for k in range(slices)]).astype(np.float32)
    panes = {name: volume + scale * rng.standard_normal(volume.shape).astype(np.float32)
             for name, scale in (("zero-filled", 0.2), ("classical", 0.05), ("reference", 0.0))}
    files = write_results(data_dir, job.id, ImageVolume(volume, np.diag([1.0, 1.0, 2.0, 1.0]), {"method": "rim"}),
                          dicom=DicomSeries("mri", StudyInfo(patient_name="Large^Study").with_uid(),
                                            Provenance(method="rim", pipeline="mri-rim")), panes=panes)
    context.store.claim_next("bench")
    context.store.finish(job.id, JobState.SUCCEEDED, result={"files": files, "provenance": {"model_id": "bench"}})
    context.engine.dispose()
    return job.id


LOAD_START = os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--opens", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        job_id = large_job(data_dir, args.slices, args.size)
        server = LocalServer(data_dir, tokens=TOKEN, env={"RECON_WARMUP": "false", "OMP_NUM_THREADS": "1"},
                             ready_timeout=120).start()
        rounds = []
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
                for _ in range(args.opens + 1):  # the first open warms the server up; it is not counted
                    context = browser.new_context(viewport={"width": 1400, "height": 900})
                    page = context.new_page()
                    page.goto(server.url + "/review/")
                    page.fill("#token", "bench")
                    page.click("button[type=submit]")
                    page.wait_for_selector(f"tr[data-job='{job_id}']")
                    start = time.perf_counter()
                    page.click(f"tr[data-job='{job_id}']")
                    page.wait_for_function("window.reviewStats.firstImageMs !== null", polling=10)
                    wall = time.perf_counter() - start
                    first = page.evaluate("window.reviewStats.firstImageMs") / 1000
                    scroll_start = time.perf_counter()
                    for _ in range(args.slices):
                        page.keyboard.press("ArrowDown")
                    for _ in range(args.slices):
                        page.keyboard.press("ArrowUp")
                    page.wait_for_function(
                        f"window.reviewStats.keys.length >= {2 * args.slices}", polling=50, timeout=120000)
                    scroll = time.perf_counter() - scroll_start
                    keys = page.evaluate("window.reviewStats.keys")
                    rounds.append({"first_image_s": round(first, 3), "click_to_first_image_wall_s": round(wall, 3),
                                   "scroll_down_and_up_s": round(scroll, 2), "slices_fetched": len(keys),
                                   "refetched": len(keys) - len(set(keys))})
                    context.close()
                browser.close()
        finally:
            server.stop()
    counted = rounds[1:]
    result = {
        "command": "PYTHONPATH=. python benchmarks/review_viewer.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_start_end": [round(LOAD_START, 2), round(os.getloadavg()[0], 2)],
        "series": f"{args.slices} slices of {args.size}x{args.size}, 4 panes (2 shown), float32",
        "opens": args.opens, "rounds": counted,
        "median_first_image_s": statistics.median(r["first_image_s"] for r in counted),
        "max_first_image_s": max(r["first_image_s"] for r in counted),
        "median_click_to_first_image_wall_s": statistics.median(r["click_to_first_image_wall_s"] for r in counted),
        "refetched_total": sum(r["refetched"] for r in counted),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
