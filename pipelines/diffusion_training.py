"""The training loop the diffusion priors share (``recon train ct-prior``, ``diffusion-prior``, ``ambient-prior``).

A prior's trainer supplies the network, a ``batch_loss(generator)`` (draws its own batch and noise from the
generator, runs the network under ``autocast(cfg)``, returns the scalar float32 loss with autograd) and a
``validate(network)`` (a fixed-noise loss on fixed slices, so runs compare). The loop does the rest alike for
all: AdamW with linear warm-up and cosine decay to a tenth of ``lr``, gradient clipping, an exponential moving
average of the weights (what is saved as ``model.pt``), optional bfloat16 autocast, atomic checkpoints, a time
limit, fine-tuning from given weights and a bit-exact resume. Step ``s`` draws from a generator seeded by
``(seed, s)``, so a resumed run continues the same sequence.
Writes ``model.pt``, ``checkpoint.pt``, ``config.json``, ``log.csv`` (step, loss, lr, seconds) and ``val.jsonl``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.train import TrainingDiverged, truncate_log

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
Progress = Callable[[int, int, float], None]


@dataclass
class LoopConfig:
    """The settings of ``train_loop`` that every diffusion prior's training shares (``recon train ct-prior``,
    ``diffusion-prior``, ``ambient-prior``); each prior's config adds its data's and may change the defaults."""

    model_config: dict[str, Any] = field(default_factory=dict)
    size: int = 128
    steps: int = 20000
    batch_size: int = 32
    lr: float = 2e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    val_every: int = 1000
    val_slices: int = 16
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    bf16: bool = False  # bfloat16 autocast (GPU training)
    time_limit_s: float | None = None  # stop early (weights saved) after this many seconds of this run
    init_from: str | None = None  # start from these weights (a zoo model id or a model.pt): fine-tuning

    def check(self) -> None:
        """Refuse settings a run cannot use (a ``ValueError`` naming the setting), before any work."""
        for name in ("batch_size", "checkpoint_every", "val_every", "val_slices"):
            check_integer(self, name, 1)
        for name in ("steps", "warmup_steps", "seed"):
            check_integer(self, name, 0)
        check_number(self, "lr", 1e-8, 1.0)
        check_number(self, "ema_decay", 0.0, 0.99999)
        check_number(self, "grad_clip", 0.0)
        if self.threads is not None:
            check_integer(self, "threads", 1)
        if self.time_limit_s is not None:
            check_number(self, "time_limit_s", 1.0)
        if self.init_from is not None and not (isinstance(self.init_from, str) and self.init_from):
            raise ValueError(f"init_from must be a model id or a weights path, got {self.init_from!r}")
        if not isinstance(self.model_config, dict):
            raise ValueError(f"model_config must be a JSON object, got {self.model_config!r}")
        if not isinstance(self.bf16, bool):
            raise ValueError(f"bf16 must be true or false, got {self.bf16!r}")


def check_integer(cfg: Any, name: str, low: int) -> None:
    """``cfg.name`` an integer (not a bool) of at least ``low``, or a ``ValueError`` naming it."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_number(cfg: Any, name: str, low: float, high: float = math.inf) -> None:
    """``cfg.name`` a number (not a bool) in ``[low, high]``, or a ``ValueError`` naming it."""
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")


def machine_note(device: torch.device) -> str:
    """Where the run trained, for the model card."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (one GPU), torch {torch.__version__}"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``lr`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span))))


def autocast(cfg: LoopConfig) -> torch.autocast:
    """bfloat16 autocast for the network's forward pass when ``cfg.bf16`` (draw the batch outside it)."""
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16, enabled=cfg.bf16)


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a kill during the save never leaves a broken checkpoint


def train_loop(cfg: LoopConfig, out: Path, model: torch.nn.Module, *,
               batch_loss: Callable[[torch.Generator], torch.Tensor],
               validate: Callable[[torch.nn.Module], float],
               initial_state: Callable[[str], dict[str, torch.Tensor]],
               network_note: dict[str, Any], diverged_above: float, resume: bool = False,
               progress: Progress | None = None) -> Path:
    """Train ``model`` (already on ``cfg.device``) by ``batch_loss``; returns the path of ``model.pt``."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    device = torch.device(cfg.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    start, ckpt_path = 0, out / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["config"]["model_config"] != cfg.model_config or ckpt["config"]["size"] != cfg.size:
            raise ValueError(f"{ckpt_path}: checkpoint is for another model configuration")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        average.load_state_dict(ckpt["average"])
        start = int(ckpt["step"])
    elif cfg.init_from:
        state = initial_state(cfg.init_from)
        model.load_state_dict(state)
        average.module.load_state_dict(state)
    parameters = sum(p.numel() for p in model.parameters())
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "parameters": parameters, "network": network_note,
                                                 "machine": machine_note(device)}, indent=2))
    log_path = out / "log.csv"
    new_log = not (resume and log_path.exists())
    elapsed = 0.0 if new_log else truncate_log(log_path, start)
    if new_log:
        (out / "val.jsonl").write_text(json.dumps({"step": 0, "val_loss": validate(model)}) + "\n")
    t_run = time.perf_counter()
    step = start
    with open(log_path, "w" if new_log else "a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "loss", "lr", "seconds"])
        model.train()
        t0 = time.perf_counter() - elapsed
        while step < cfg.steps:
            g = step_generator(cfg.seed, step, device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            loss = batch_loss(g)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value) or loss_value > diverged_above:
                raise TrainingDiverged(f"training diverged at step {step + 1}: the loss is {loss_value:g}; lower the "
                                       f"learning rate (lr is {cfg.lr:g}); " + (
                                           f"the checkpoint in {ckpt_path} is kept" if ckpt_path.exists()
                                           else "no checkpoint was written"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            average.update_parameters(model)
            step += 1
            log.writerow([step, f"{loss_value:.6f}", f"{lr_at(step - 1, cfg):.3e}", f"{time.perf_counter() - t0:.1f}"])
            out_of_time = cfg.time_limit_s is not None and time.perf_counter() - t_run > cfg.time_limit_s
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                log_file.flush()
                _save(ckpt_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                  "config": asdict(cfg), "average": average.state_dict()})
            if step % cfg.val_every == 0 or step == cfg.steps or out_of_time:
                with open(out / "val.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, "val_loss": validate(average.module)}) + "\n")
            if progress:
                progress(step, cfg.steps, loss_value)
            if out_of_time:
                break
    torch.save({k: v.detach().cpu() for k, v in average.module.state_dict().items()}, out / WEIGHTS)
    return out / WEIGHTS
