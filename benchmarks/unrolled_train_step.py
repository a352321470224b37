"""Time of one training step (forward + backward + Adam step) on one slice for unrolled-network configurations.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/unrolled_train_step.py [--threads 1] [--coils 8] [--size 128 128]

Synthetic input: random k-space under a 4x column mask (8 centre columns) and random normalised maps, an L1 loss
on the output magnitude (RIM: averaged over all iterates); only the time is measured, so the data need not be
an image. The configurations the zoo ships (``rvn-T8-h32``, ``rim-T8-h48-gru``) start from the shipped weights
(checksum verified), the others from seeded random weights (none are shipped at those sizes); each row says
which. Reported: parameters and the median of ``--repeats`` steps after one warm-up step, all configurations in
one process, one after another. Results go to benchmarks/results/unrolled_train_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from models.unrolled import build_model, count_parameters
from pipelines.zoo import load_model

CONFIGS = {
    "rvn-T4-h32": ("recurrentvarnet", {"num_steps": 4, "hidden_channels": 32, "num_layers": 4, "multiscale": 3}),
    "rvn-T6-h48": ("recurrentvarnet", {"num_steps": 6, "hidden_channels": 48, "num_layers": 4, "multiscale": 3}),
    "rvn-T5-h32-l3": ("recurrentvarnet", {"num_steps": 5, "hidden_channels": 32, "num_layers": 3, "multiscale": 3}),
    "rvn-T8-h32": ("recurrentvarnet", {"num_steps": 8, "hidden_channels": 32, "num_layers": 4, "multiscale": 3}),
    "rvn-T8-h48-l3": ("recurrentvarnet", {"num_steps": 8, "hidden_channels": 48, "num_layers": 3, "multiscale": 3}),
    "rim-T8-h48-gru": ("rim", {"num_steps": 8, "hidden_channels": 48, "num_layers": 2, "cell": "gru"}),
    "rim-T8-h64-indrnn": ("rim", {"num_steps": 8, "hidden_channels": 64, "num_layers": 2, "cell": "indrnn"}),
}
SHIPPED = {"rvn-T8-h32": "recurrentvarnet-brain-sim", "rim-T8-h48-gru": "rim-brain-sim"}

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def synthetic_batch(coils: int, h: int, w: int) -> Batch:
    """Masked k-space, mask, normalised maps and a target magnitude, seeded."""
    g = torch.Generator().manual_seed(0)
    kspace = torch.randn(1, coils, h, w, 2, generator=g)
    mask = torch.zeros(1, 1, 1, w, 1)
    mask[..., ::4, :] = 1
    mask[..., w // 2 - 4: w // 2 + 4, :] = 1
    maps = torch.randn(1, coils, h, w, 2, generator=g)
    maps = maps / maps.pow(2).sum(dim=(1, 4), keepdim=True).sqrt()
    return kspace * mask, mask, maps, torch.rand(1, h, w, generator=g)


def network(name: str, fft: str) -> tuple[torch.nn.Module, str]:
    """The configuration's network with the shipped weights where the zoo has them, else seeded random ones."""
    kind, config = CONFIGS[name]
    torch.manual_seed(0)
    model = build_model(kind, dict(config, fft_variant=fft))
    weights = "random (seed 0)"
    if name in SHIPPED:
        shipped, card = load_model(SHIPPED[name])  # checksum verified against the card
        model.load_state_dict(shipped.state_dict(), strict=True)
        weights = f"shipped {SHIPPED[name]}, sha256 {card['sha256'][:12]}"
    return model.train(), weights


def step_seconds(model: torch.nn.Module, batch: Batch, repeats: int) -> list[float]:
    """Wall time of ``repeats`` training steps after one warm-up step (oneDNN, allocator)."""
    masked, mask, maps, target = batch
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = model(masked, mask, maps)
        outs = out if isinstance(out, list) else [out]
        loss = torch.stack([(o.pow(2).sum(-1).sqrt() - target).abs().mean() for o in outs]).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if i > 0:
            times.append(time.perf_counter() - start)
    return times


def command_line(args: argparse.Namespace) -> str:
    only = f" --only {' '.join(args.only)}" if args.only else ""
    return (f"OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/unrolled_train_step.py --threads "
            f"{args.threads} --coils {args.coils} --size {args.size[0]} {args.size[1]} --repeats {args.repeats} "
            f"--fft {args.fft}{only}" + (" --flush-denormal" if args.flush_denormal else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fft", default="dft-op", choices=("dft-op", "matmul"))
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(CONFIGS), help="config names to run")
    parser.add_argument("--flush-denormal", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/unrolled_train_step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    batch = synthetic_batch(args.coils, *args.size)
    load = os.getloadavg()
    rows = []
    for name in args.only or CONFIGS:
        model, weights = network(name, args.fft)
        times = step_seconds(model, batch, args.repeats)
        rows.append({"config": name, "kind": CONFIGS[name][0], "network": CONFIGS[name][1], "weights": weights,
                     "parameters": count_parameters(model), "seconds": statistics.median(times),
                     "seconds_all": times})
        print(f"{name:20s} params {rows[-1]['parameters']:>9,d}  fwd+bwd+step {rows[-1]['seconds']:6.2f} s/slice",
              flush=True)
    result = {"command": command_line(args), "threads": args.threads, "coils": args.coils, "size": list(args.size),
              "fft": args.fft, "repeats": args.repeats, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "load_average": {"start": load, "end": os.getloadavg()}, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


def table(result: dict) -> str:
    """The BENCHMARKS.md table of a results file."""
    lines = ["| configuration | weights | parameters | s per training step (1 slice) |", "|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['weights']} | {r['parameters']:,} | {r['seconds']:.2f} |" for r in result["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
