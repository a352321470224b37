"""Validation PSNR/SSIM of shipped zoo weights now and at an earlier git revision, on the same files.

    PYTHONPATH=. python benchmarks/validation_before_after.py --before REV [--ids rim-brain-sim,...]
        [--val data/brain-bench/val] [--max-files 4]

Checks that a re-shipped model's gain on the selection subset holds on another one (validation reads
``--max-files`` files spread over the sorted directory, see ``pipelines.train.validation_files``). The shipped
weights are loaded checksum-verified against their cards; the earlier ones are read from git at ``--before``
(their SHA-256 is recorded). Results go to benchmarks/results/validation_before_after.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
from pathlib import Path

import torch

from models.unrolled import build_model
from pipelines.reconstructors import default_models
from pipelines.train import validate, validation_files
from pipelines.zoo import ZOO_DIR, load_model


def blob_at(rev: str, model_id: str) -> bytes:
    """A zoo model's committed weights file at git revision ``rev``."""
    repo = ZOO_DIR.parents[1]
    path = (ZOO_DIR / model_id / "model.pt").relative_to(repo)
    return subprocess.run(["git", "-C", str(repo), "show", f"{rev}:{path.as_posix()}"],
                          capture_output=True, check=True).stdout


def weights_at(rev: str, model_id: str) -> dict[str, torch.Tensor]:
    """A zoo model's committed weights at git revision ``rev``."""
    return torch.load(io.BytesIO(blob_at(rev, model_id)), weights_only=True)


def compare(model_id: str, rev: str, val: str, max_files: int) -> list[dict]:
    """Validation scores of the weights at ``rev`` and of the shipped ones."""
    shipped, card = load_model(model_id)  # checksum-verified against its card
    before = build_model(card["kind"], card["config"])
    before.load_state_dict(weights_at(rev, model_id))
    rows = []
    for label, model, sha in ((rev, before, hashlib.sha256(blob_at(rev, model_id)).hexdigest()),
                              ("shipped", shipped, card["sha256"])):
        scores = validate(model, val, max_files)
        rows.append({"model": model_id, "weights": label, "sha256": sha, **scores})
        print(f"| {model_id} | {label} | {scores['psnr']:.2f} | {scores['ssim']:.4f} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision of the earlier weights")
    parser.add_argument("--ids", default=",".join(default_models("mri").values()))
    parser.add_argument("--val", default="data/brain-bench/val")
    parser.add_argument("--max-files", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/validation_before_after.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = [f.name for f in validation_files(args.val, args.max_files)]
    print("files:", ", ".join(files))
    print("| model | weights | PSNR (dB) | SSIM |\n|---|---|---|---|")
    rows = [row for model_id in args.ids.split(",") for row in compare(model_id, args.before, args.val,
                                                                        args.max_files)]
    command = (f"PYTHONPATH=. .venv/bin/python benchmarks/validation_before_after.py --before {args.before} "
               f"--ids {args.ids} --val {args.val} --max-files {args.max_files} --threads {args.threads}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ZOO_DIR.parents[1]), "rev-parse", args.before], capture_output=True,
                            text=True, check=True).stdout.strip()
    Path(args.out).write_text(json.dumps({"command": command, "before": args.before, "before_commit": commit,
                                          "val": args.val,
                                          "files": files, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
