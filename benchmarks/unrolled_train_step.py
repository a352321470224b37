"""Forward+backward time of one training step per slice for unrolled-network configurations.

    PYTHONPATH=. python benchmarks/unrolled_train_step.py [--threads 2] [--coils 8] [--size 128 128]

Random k-space, a 4x column mask and random normalised maps; L1 loss on the output magnitude
(RIM: averaged over all iterates). Reports parameters and the median of a few timed steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.unrolled import build_model, count_parameters

CONFIGS = {
    "rvn-T4-h32": ("recurrentvarnet", {"num_steps": 4, "hidden_channels": 32, "num_layers": 4, "multiscale": 3}),
    "rvn-T6-h48": ("recurrentvarnet", {"num_steps": 6, "hidden_channels": 48, "num_layers": 4, "multiscale": 3}),
    "rvn-T5-h32-l3": ("recurrentvarnet", {"num_steps": 5, "hidden_channels": 32, "num_layers": 3, "multiscale": 3}),
    "rvn-T8-h32": ("recurrentvarnet", {"num_steps": 8, "hidden_channels": 32, "num_layers": 4, "multiscale": 3}),
    "rvn-T8-h48-l3": ("recurrentvarnet", {"num_steps": 8, "hidden_channels": 48, "num_layers": 3, "multiscale": 3}),
    "rim-T8-h48-gru": ("rim", {"num_steps": 8, "hidden_channels": 48, "num_layers": 2, "cell": "gru"}),
    "rim-T8-h64-indrnn": ("rim", {"num_steps": 8, "hidden_channels": 64, "num_layers": 2, "cell": "indrnn"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fft", default="dft-op", choices=("dft-op", "matmul"))
    parser.add_argument("--only", nargs="*", default=None, help="config names to run")
    parser.add_argument("--flush-denormal", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    h, w = args.size
    g = torch.Generator().manual_seed(0)
    kspace = torch.randn(1, args.coils, h, w, 2, generator=g)
    mask = torch.zeros(1, 1, 1, w, 1)
    mask[..., ::4, :] = 1
    mask[..., w // 2 - 4: w // 2 + 4, :] = 1
    maps = torch.randn(1, args.coils, h, w, 2, generator=g)
    maps = maps / maps.pow(2).sum(dim=(1, 4), keepdim=True).sqrt()
    masked = kspace * mask
    target = torch.rand(1, h, w)
    for name, (kind, config) in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        model = build_model(kind, dict(config, fft_variant=args.fft)).train()
        optim = torch.optim.Adam(model.parameters(), lr=1e-4)
        times = []
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            out = model(masked, mask, maps)
            outs = out if isinstance(out, list) else [out]
            loss = torch.stack([(o.pow(2).sum(-1).sqrt() - target).abs().mean() for o in outs]).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
            if i > 0:  # first step warms up oneDNN
                times.append(time.perf_counter() - start)
        print(f"{name:20s} params {count_parameters(model):>9,d}  fwd+bwd+step {statistics.median(times):6.2f} s/slice"
              f"  ({args.coils} coils {h}x{w}, {args.threads} threads, fft {args.fft})", flush=True)


if __name__ == "__main__":
    main()
