"""``recon demo``: the main job end to end on embedded defaults, no other server needed.

The default demo starts ``recon serve`` on loopback (SQLite job store, local storage, CPU engines, the
shipped models), submits a simulated brain MRI study and a sparse-view CT study over HTTP, follows their
progress, downloads the DICOM series, NIfTI volumes, PNG previews and metrics, and prints where they are.

``recon demo --compare`` instead reconstructs the simulated studies with every method in-process (classical
baselines and the shipped learned models) and prints the metrics tables against the ground truth.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from pipelines.evaluate import format_summary
from recon_service.progress import write_mri_set

if TYPE_CHECKING:
    from recon_service.local_server import LocalServer

class DemoFailed(RuntimeError):
    """The demo's service did not start, or one of its jobs did not succeed."""


DEMO_MRI_METHODS = ("zero-filled", "cg-sense", "l1-wavelet", "admm-tv", "rim", "recurrentvarnet")
DEMO_CT_METHODS = ("fbp", "sirt", "admm-tv")


def _mri_methods() -> list[str]:
    from pipelines.reconstructors import default_models
    from pipelines.zoo import list_models

    shipped = {card["id"] for card in list_models()}
    defaults = default_models()
    return [m for m in DEMO_MRI_METHODS if m not in defaults or defaults[m] in shipped]


def _report(out: Path, title: str, name: str, summary: dict) -> None:
    (out / f"metrics_{name}.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{title}, {summary['volumes']} volumes:")
    print(format_summary(summary))


def run_comparison(out: Path) -> int:
    from pipelines.evaluate import evaluate_directory
    from pipelines.pipeline import reconstruct_file
    from pipelines.simulate import mri
    from pipelines.simulate.ct import simulate_ct_dataset

    out.mkdir(parents=True, exist_ok=True)
    methods = _mri_methods()
    cfg = mri.MRISimulationConfig(size=128, coils=8, slices=4)
    data = out / "mri"
    for acc in (4.0, 8.0):
        specs = mri.plan("test", ("t1", "t2"), ("axial",), (acc,), cfg, max_files=2)
        write_mri_set(data / f"{acc:g}x", specs, cfg)
    print(f"simulated brain MRI study (held-out slices): {data}")
    first = sorted((data / "4x").glob("*.h5"))[0]
    for method in methods:
        result = reconstruct_file(first, method, out / "recon")
        print(f"{method:<16} -> {result.outputs['nifti']}  {result.outputs['png']}")
    for acc in ("4x", "8x"):
        _report(out, f"MRI {acc} (simulated brain, 8 coils, 128 x 128)", f"mri_{acc}",
                evaluate_directory(data / acc, methods))

    ct_data = out / "ct"
    simulate_ct_dataset(ct_data, views=8, source="brain", size=96, slices=8, noise_i0=1e5)
    print(f"\nsimulated sparse-view CT study (8 views, pseudo-CT brain): {ct_data}")
    first = sorted(ct_data.glob("*.h5"))[0]
    for method in DEMO_CT_METHODS:
        result = reconstruct_file(first, method, out / "recon")
        print(f"{method:<16} -> {result.outputs['nifti']}  {result.outputs['png']}")
    _report(out, "CT, 8 views (parallel beam, I0 = 1e5)", "ct_8views",
            evaluate_directory(ct_data, DEMO_CT_METHODS))
    print(f"\nresults in {out}")
    return 0


# (pipeline, params) per study; the learned MRI network and the tuned CT baseline are the main jobs
SERVICE_JOBS = {
    "mri": [("mri-recurrentvarnet", {"engine": "onnx"}), ("mri-cg-sense", {})],
    "ct": [("ct-admm-tv", {}), ("ct-fbp", {})],
}
DEMO_STUDIES = {
    "mri": {"PatientName": "Demo^Brain MRI", "PatientID": "DEMO-MR-001", "StudyDescription": "Simulated brain MRI",
            "AccessionNumber": "DEMO0001"},
    "ct": {"PatientName": "Demo^Head CT", "PatientID": "DEMO-CT-001", "StudyDescription": "Simulated head CT",
           "AccessionNumber": "DEMO0002"},
}


def _simulate_studies(out: Path) -> dict[str, Path]:
    from pipelines.simulate import mri
    from pipelines.simulate.ct import simulate_ct_dataset

    cfg = mri.MRISimulationConfig(size=128, coils=8, slices=4)
    specs = mri.plan("test", ("t1",), ("axial",), (4.0,), cfg, max_files=1)
    mri_file = write_mri_set(out / "mri", specs, cfg)[0]
    ct_files = simulate_ct_dataset(out / "ct", views=8, source="brain", size=96, slices=8, noise_i0=1e5)
    return {"mri": mri_file, "ct": sorted(ct_files)[0]}


def _start(server: LocalServer) -> LocalServer:
    """Start the demo's service; a ``DemoFailed`` with the reason from its log when it does not come up."""
    try:
        return server.start()
    except (RuntimeError, TimeoutError) as err:
        server.stop()
        log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        reasons = [line for line in log.splitlines() if "ERROR" in line or "Error" in line]
        reason = reasons[-1].strip() if reasons else str(err).splitlines()[0]
        raise DemoFailed(f"the demo service did not start: {reason} (log: {server.log_path})") from None


def run_service_demo(out: Path, workers: int = 2, port: int | None = None) -> int:
    from recon_service.local_server import LocalServer

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    inputs = _simulate_studies(out / "inputs")
    print(f"simulated studies: MRI {inputs['mri']}, CT {inputs['ct']}")
    print("starting recon serve on loopback (loading and warming up the shipped models) ...", flush=True)
    server = _start(LocalServer(out / "service", port=port or None, workers=workers))
    try:
        with server.client() as client:
            print(f"service ready at {server.url} (log: {server.log_path})")
            submitted = []
            for modality, jobs in SERVICE_JOBS.items():
                for pipeline, params in jobs:
                    job = client.submit([inputs[modality]], pipeline, params=params, study=DEMO_STUDIES[modality])
                    submitted.append((pipeline, job["id"]))
                    print(f"submitted {pipeline:<22} job {job['id']}")
            results = out / "results"
            for pipeline, job_id in submitted:
                bar = tqdm(total=100, desc=pipeline, file=sys.stderr, leave=False,  # a job's percent done, no rate
                           bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}")

                def show(status: dict, bar: tqdm = bar, last: list = [None]) -> None:  # noqa: B006 - per-bar memo
                    shown = (round(100 * float(status.get("progress") or 0.0)), status["state"], status.get("step"))
                    if shown != last[0]:
                        last[0] = shown
                        bar.n = shown[0]
                        bar.set_postfix_str(f"{shown[1]} {shown[2] or ''}".strip())

                status = client.wait(job_id, on_progress=show)
                bar.close()
                if status["state"] != "succeeded":
                    raise DemoFailed(f"{pipeline} job {job_id} {status['state']}: {status.get('error')}")
                target = results / pipeline
                paths = {fmt: client.download(job_id, fmt, target / name) for fmt, name in
                         (("dicom", "series.zip"), ("nifti", "recon.nii.gz"), ("png", "preview.png"),
                          ("metrics", "metrics.json"))}
                metrics = json.loads(paths["metrics"].read_text())
                print(f"{pipeline:<22} PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.4f}  "
                      f"-> DICOM {paths['dicom']}  NIfTI {paths['nifti']}  PNG {paths['png']}")
    finally:
        server.stop()
    print(f"\nresults in {results}; service data (job store, uploads, results) in {out / 'service'}")
    return 0


def run_demo(out: Path, compare: bool = False, port: int | None = None) -> int:
    """``recon demo``: the service demo on ``port`` (default a free one), or the in-process comparison."""
    return run_comparison(out) if compare else run_service_demo(out, port=port)
