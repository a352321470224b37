"""Throughput of our PACS senders into a local Orthanc, against dcmtk's storescu sending the same files.

    PYTHONPATH=. python benchmarks/pacs_throughput.py [--instances 64] [--size 256] [--rounds 5]

A real Orthanc (Debian orthanc + orthanc-dicomweb, as the tests start it) on loopback ports; two MR series of
``--instances`` single-frame 16-bit ``--size``^2 images (our own DICOM writer), one to tune on and one to score.
Three sides send a whole series, files on disk to instances stored in Orthanc, with the same work in the timer:

* ``stow-rs``: our outbox's STOW-RS sender (``recon_service.pacs.senders.send_stow``, dicomweb-client), reading the
  files with pydicom; its one setting, the instances per request, is chosen on the tuning series (1, 8, 32, 64);
* ``c-store``: our C-STORE sender (``send_cstore``, pynetdicom), reading the files with pydicom, one association;
* ``storescu``: ``storescu -aet RECON -aec ORTHANC host port FILES...`` (dcmtk), one association; its process
  start-up (``storescu --version``, median of 5) is reported apart, not subtracted.

Before every send the series is deleted from Orthanc, so each side makes Orthanc store every instance anew; after
it, Orthanc must hold exactly ``--instances`` instances of the series. The three sides run in rotated order in
each of ``--rounds`` rounds after a warm-up round; reported are medians of instances per second and the ratios
to storescu's median of the same rounds. Results: benchmarks/results/pacs_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' Orthanc fixture

from orthanc import AET, PASSWORD, USER, OrthancServer  # noqa: E402

from pipelines.data import ImageVolume  # noqa: E402
from pipelines.io.dicom_series import Provenance, write_dicom_series  # noqa: E402
from pipelines.io.dicom_study import StudyInfo  # noqa: E402
from recon_service.pacs.config import DicomWebDestination, DimseDestination  # noqa: E402
from recon_service.pacs.senders import send_cstore, send_stow  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pacs_throughput.json"
STOW_BATCHES = (1, 8, 32, 64)


def make_series(out: Path, instances: int, size: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    data = rng.random((instances, size, size)).astype(np.float32)
    volume = ImageVolume(data, np.diag([1.0, 1.0, 2.0, 1.0]), {"method": "benchmark"})
    return write_dicom_series(volume, out, "MR", StudyInfo(patient_id=f"BENCH-{seed}").with_uid(),
                              Provenance(method="benchmark", pipeline="benchmark"))


class Sides:
    def __init__(self, orthanc: OrthancServer):
        self.orthanc = orthanc
        self.dimse = DimseDestination(kind="dimse", host="127.0.0.1", port=orthanc.dicom_port, called_ae=AET,
                                      calling_ae="RECON", timeout_s=60)

    def stow(self, paths: list[Path], batch: int) -> None:
        destination = DicomWebDestination(kind="dicomweb", url=self.orthanc.dicomweb, username=USER, password=PASSWORD,
                                          batch=batch, timeout_s=120)
        send_stow(destination, [pydicom.dcmread(p) for p in paths], lambda n: None)

    def cstore(self, paths: list[Path]) -> None:
        send_cstore(self.dimse, [pydicom.dcmread(p) for p in paths], lambda n: None)

    def storescu(self, paths: list[Path]) -> None:
        subprocess.run(["storescu", "-aet", "RECON", "-aec", AET, "127.0.0.1", str(self.orthanc.dicom_port),
                        *map(str, paths)], check=True, capture_output=True, timeout=600)


def clear(orthanc: OrthancServer, study_uid: str) -> None:
    for study in orthanc.json("/studies"):
        tags = orthanc.json(f"/studies/{study}")["MainDicomTags"]
        if tags.get("StudyInstanceUID") == study_uid:
            httpx.delete(f"{orthanc.url}/studies/{study}", auth=(USER, PASSWORD), timeout=60).raise_for_status()


def timed(orthanc: OrthancServer, paths: list[Path], send) -> float:  # noqa: ANN001
    """Instances per second of one send of the whole series into an Orthanc that does not hold it."""
    study = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    clear(orthanc, study)
    start = time.perf_counter()
    send(paths)
    seconds = time.perf_counter() - start
    stored = len(orthanc.instances_of_study(study))
    if stored != len(paths):
        raise RuntimeError(f"Orthanc holds {stored} of {len(paths)} instances after a send")
    return len(paths) / seconds


LOAD_START = os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    orthanc = OrthancServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tuning = make_series(Path(tmp) / "tuning", args.instances, args.size, seed=1)
            held_out = make_series(Path(tmp) / "held-out", args.instances, args.size, seed=2)
            instance_bytes = int(np.mean([p.stat().st_size for p in held_out]))
            sides = Sides(orthanc)
            # tuning: the STOW-RS batch size, each candidate twice on the tuning series (after one warm-up send)
            timed(orthanc, tuning, lambda p: sides.stow(p, 8))
            tuning_rates = {b: statistics.median(timed(orthanc, tuning, lambda p, b=b: sides.stow(p, b))
                                                 for _ in range(2)) for b in STOW_BATCHES}
            batch = max(tuning_rates, key=tuning_rates.get)
            runs = {"stow-rs": lambda p: sides.stow(p, batch), "c-store": sides.cstore, "storescu": sides.storescu}
            names = list(runs)
            for name in names:  # warm-up round
                timed(orthanc, held_out, runs[name])
            rates: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                for name in names[r % 3:] + names[:r % 3]:
                    rates[name].append(timed(orthanc, held_out, runs[name]))
            startup = []
            for _ in range(5):
                start = time.perf_counter()
                subprocess.run(["storescu", "--version"], check=True, capture_output=True)
                startup.append(time.perf_counter() - start)
            version = orthanc.json("/system")["Version"]
    finally:
        orthanc.close()
    medians = {name: statistics.median(v) for name, v in rates.items()}
    dcmtk = subprocess.run(["storescu", "--version"], capture_output=True, text=True).stdout.splitlines()
    result = {
        "command": "PYTHONPATH=. python benchmarks/pacs_throughput.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_start_end": [round(LOAD_START, 2), round(os.getloadavg()[0], 2)],
        "orthanc": version, "dcmtk": next((line for line in dcmtk if "dcmtk" in line.lower()), dcmtk[:1]),
        "instances": args.instances, "image": f"{args.size}x{args.size} 16-bit MR",
        "instance_bytes": instance_bytes,
        "stow_batch_tuning": {str(b): round(v, 1) for b, v in tuning_rates.items()}, "stow_batch": batch,
        "rounds": args.rounds,
        "instances_per_s": {name: [round(x, 1) for x in v] for name, v in rates.items()},
        "median_instances_per_s": {name: round(v, 1) for name, v in medians.items()},
        "ratio_to_storescu": {name: round(v / medians["storescu"], 3) for name, v in medians.items()},
        "storescu_startup_s": round(statistics.median(startup), 4),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
