"""Validation PSNR/SSIM of shipped zoo weights now and at an earlier git revision, on the same files.

    PYTHONPATH=. python benchmarks/validation_before_after.py --before REV [--ids rim-brain-sim,...]
        [--val data/brain-bench/val] [--max-files 4]

Checks that a re-shipped model's gain on the selection subset holds on another one (validation reads
``--max-files`` files spread over the sorted directory, see ``pipelines.train.validation_files``).
"""

from __future__ import annotations

import argparse
import io
import subprocess

import torch

from models.unrolled import build_model
from pipelines.reconstructors import default_models
from pipelines.train import validate, validation_files
from pipelines.zoo import ZOO_DIR, load_model


def weights_at(rev: str, model_id: str) -> dict[str, torch.Tensor]:
    """A zoo model's committed weights at git revision ``rev``."""
    repo = ZOO_DIR.parents[1]
    path = (ZOO_DIR / model_id / "model.pt").relative_to(repo)
    blob = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:{path.as_posix()}"],
                          capture_output=True, check=True).stdout
    return torch.load(io.BytesIO(blob), weights_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision of the earlier weights")
    parser.add_argument("--ids", default=",".join(default_models().values()))
    parser.add_argument("--val", default="data/brain-bench/val")
    parser.add_argument("--max-files", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("files:", ", ".join(f.name for f in validation_files(args.val, args.max_files)))
    print("| model | weights | PSNR (dB) | SSIM |\n|---|---|---|---|")
    for model_id in args.ids.split(","):
        shipped, card = load_model(model_id)  # checksum-verified against its card
        before = build_model(card["kind"], card["config"])
        before.load_state_dict(weights_at(args.before, model_id))
        for label, model in ((args.before, before), ("shipped", shipped)):
            scores = validate(model, args.val, args.max_files)
            print(f"| {model_id} | {label} | {scores['psnr']:.2f} | {scores['ssim']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
