"""How far can the shipped RecurrentVarNet's size go on FLAIR at 8x? An oracle fine-tuned on FLAIR itself.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/mri_flair_oracle.py --weights runs/rvn-flair-oracle/model.pt

Issue #21 asks the retrained RecurrentVarNet to beat L1-wavelet by 3 dB on the held-out contrast (FLAIR) at 8x.
This diagnostic asks whether the network's size allows it at all: the shipped ``recurrentvarnet-brain-randomized``
is fine-tuned on FLAIR slices of the training slabs only (an oracle: it has seen the contrast, so it is not a
held-out result and is never shipped), then scored beside the shipped model and L1-wavelet on the held-out FLAIR
slabs (``test-contrast``, subjects of the test split, never trained on by either). The oracle's data and training:

    recon simulate mri --out data/brain-flair-oracle/train --split train --contrast flair --acceleration 1
    recon simulate mri --out data/brain-flair-oracle/val --split val --contrast flair --acceleration 4 8
    recon train recurrentvarnet --out runs/rvn-flair-oracle --steps 1200 --seed 41 --threads 1 \\
        --data data/brain-flair-oracle/train --val-data data/brain-flair-oracle/val \\
        --init recurrentvarnet-brain-randomized --config '{"lr": 0.0001, "warmup_steps": 50, \\
        "lr_decay_every": 100000, "checkpoint_every": 50, "val_every": 400, "flip_augment": true, "ema_decay": 0.998}'
    (the same command with --steps 3000 --resume: 3000 steps in all, at a constant lr after the warm-up)

Each network runs alone (no data-consistency step: ``consistency off``), L1-wavelet at its declared defaults;
fastMRI PSNR/SSIM/NMSE of magnitudes against the noise-free reference, per volume. Writes ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from models.unrolled import build_model
from pipelines.evaluate import dataset_files
from pipelines.io.fastmri import read_fastmri
from pipelines.learned import reconstruct_acquisition
from pipelines.metrics import METRICS, evaluate_volume
from pipelines.pipeline import reconstruct
from pipelines.sampling import acquisition_mask
from pipelines.train import validate
from pipelines.zoo import load_model

BASE = "recurrentvarnet-brain-randomized"


def validation_log(path: Path) -> list[dict[str, float]]:
    """The training run's validation scores (its ``val.jsonl``, FLAIR ``val`` slabs here), if the run left them."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="runs/rvn-flair-oracle/model.pt", help="the oracle's state dict")
    parser.add_argument("--data", default="data/brain-bench/test-contrast")
    parser.add_argument("--val", default="data/brain-flair-oracle/val",
                        help="the oracle's validation slabs: the shipped model is scored there too, as its start")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/mri_flair_oracle.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped, card = load_model(BASE)  # checksum-verified against its card
    oracle = build_model(card["kind"], card["config"])
    blob = Path(args.weights).read_bytes()
    oracle.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    networks = {BASE: shipped.eval(), "oracle (fine-tuned on FLAIR)": oracle.eval()}
    rows = []
    for path in dataset_files(args.data):
        acq = read_fastmri(path)
        mask, num_low = acquisition_mask(acq)
        l1 = np.abs(reconstruct(acq, "l1-wavelet", {}).volume.data)
        row = {"file": Path(path).name, "l1-wavelet": evaluate_volume(acq.reference, l1)}
        with torch.no_grad():
            for name, net in networks.items():
                row[name] = evaluate_volume(acq.reference, np.abs(reconstruct_acquisition(net, acq, mask, num_low)))
        rows.append(row)
        print(row["file"], {k: round(v["psnr"], 2) for k, v in row.items() if k != "file"}, flush=True)
    summary = {}
    for r in sorted({row["file"].rsplit("_", 1)[1].removesuffix(".h5") for row in rows}):
        group = [row for row in rows if row["file"].endswith(f"_{r}.h5")]
        summary[r] = {name: {m: float(np.mean([row[name][m] for row in group])) for m in METRICS}
                      for name in ("l1-wavelet", *networks)}
        for name in networks:
            summary[r][name]["gain_over_l1_db"] = summary[r][name]["psnr"] - summary[r]["l1-wavelet"]["psnr"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} PYTHONPATH=. python "
                   + shlex.join(["benchmarks/mri_flair_oracle.py", *sys.argv[1:]]),
        "data": args.data, "base": {"model_id": BASE, "sha256": card["sha256"],
                                    "on_flair_val": validate(shipped, args.val) if Path(args.val).is_dir() else None},
        "oracle": {"weights": args.weights, "sha256": hashlib.sha256(blob).hexdigest(),
                   "training": __doc__.split("training:\n\n", 1)[1].split("\n\n", 1)[0],
                   "validation_on_flair_val": validation_log(Path(args.weights).parent / "val.jsonl")},
        "summary": summary, "rows": rows}, indent=1) + "\n")
    for r, s in summary.items():
        print(r, {k: round(v["psnr"], 2) for k, v in s.items()},
              {k: round(v["gain_over_l1_db"], 2) for k, v in s.items() if k != "l1-wavelet"})


if __name__ == "__main__":
    main()
