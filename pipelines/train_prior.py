"""Training of the 2D diffusion prior for CT (``recon train ct-prior``).

Each step draws a batch of augmented axial slices (``pipelines.simulate.prior_slices``: the pseudo-CT brain's
training range by default, or the user's DICOM CT series / NIfTI volumes), a timestep ``t`` uniform in
``[0, T)`` per slice and noise ``eps``, and minimises ``|| eps_theta(x_t, t) - eps ||^2`` with
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (DDPM, Ho et al. 2020). The saved weights are an exponential
moving average of the trained ones. Validation: the same loss on fixed, unaugmented slices (the brain's tuning
slab, or the first slices of the user's first volume) at fixed timesteps and noise, so runs compare.
Everything is seeded by ``seed`` and the step, so a run resumed from its checkpoint continues where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.diffusion.network import DEFAULT_PRIOR_CONFIG, build_prior_unet, size_multiple
from models.diffusion.schedule import VPSchedule
from pipelines.data import InputError
from pipelines.diffusion_training import LoopConfig, autocast, check_integer, check_number, train_loop

VAL_TIMESTEPS = (20, 100, 300, 600, 900)
DIVERGED_LOSS = 1e3  # eps has unit variance: an untrained network scores about 1


@dataclass
class CTPriorConfig(LoopConfig):
    data: str | list[str] = "brain"  # "brain" (the pseudo-CT brain's training range) or volume paths
    pixel_mm: float = 2.0
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2

    def check(self) -> None:
        super().check()
        check_integer(self, "num_train_timesteps", 1)
        check_integer(self, "size", 8)
        if self.size % size_multiple(self.model_config):
            raise ValueError(f"size must be a multiple of {size_multiple(self.model_config)}, got {self.size}")
        check_number(self, "pixel_mm", 1e-3, 100.0)
        VPSchedule(self.num_train_timesteps, self.beta_start, self.beta_end)
        data = self.data
        if not (data == "brain" or (isinstance(data, list) and data and all(isinstance(d, str) for d in data))):
            raise ValueError(f"data must be \"brain\" or a list of DICOM series / NIfTI paths, got {data!r}")

    @property
    def schedule(self) -> VPSchedule:
        return VPSchedule(self.num_train_timesteps, self.beta_start, self.beta_end)


def training_volumes(data: str | list[str]) -> list[Path]:
    """The DICOM CT series (directories or files) and NIfTI volumes under the given paths."""
    found: list[Path] = []
    for entry in [data] if isinstance(data, str) else data:
        path = Path(entry)
        if not path.exists():
            raise InputError(path, "no such file or directory (give DICOM CT series or NIfTI volumes)")
        if path.is_dir():
            niftis = sorted(p for p in path.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
            series = sorted({p.parent for p in path.rglob("*.dcm")})
            if not niftis and not series:
                raise InputError(path, "no NIfTI volumes (.nii, .nii.gz) or DICOM files (.dcm) found")
            found += niftis + series
        else:
            found.append(path)
    return found


def _sources(cfg: CTPriorConfig, device: torch.device):
    from pipelines.simulate.prior_slices import (
        TUNING_SLAB_Z_MM,
        PriorSlices,
        brain_source,
        fixed_slices,
        slab_heights,
        user_sources,
    )

    if cfg.data == "brain":
        sampler = PriorSlices([brain_source(device)], cfg.size, cfg.pixel_mm)
        val_src = brain_source(device, randomise_tissue=False)
        heights = slab_heights(TUNING_SLAB_Z_MM)
        heights = heights[np.linspace(0, len(heights) - 1, cfg.val_slices).round().astype(int)]
    else:
        sources = user_sources(training_volumes(cfg.data), device)
        sampler = PriorSlices(sources, cfg.size, cfg.pixel_mm)
        val_src = sources[0]
        lo, hi = val_src.z_ranges_mm[0]
        heights = np.linspace(lo, hi, cfg.val_slices)
    val = fixed_slices(val_src, heights, cfg.size, cfg.pixel_mm)
    if float(val.max()) < -0.9:
        raise InputError(cfg.data if isinstance(cfg.data, str) else cfg.data[0],
                         f"the validation slices hold only air: the volumes do not reach into the training field of "
                         f"view ({cfg.size} x {cfg.pixel_mm:g} mm around each volume's centre); set pixel_mm (and "
                         f"size) to the data's scale in --config")
    return sampler, val


def validation_loss(model: torch.nn.Module, schedule: VPSchedule, x0: torch.Tensor, seed: int = 1234) -> float:
    """Mean ``|| eps_theta - eps ||^2`` over ``x0`` at each of ``VAL_TIMESTEPS`` (fixed noise)."""
    g = torch.Generator(x0.device).manual_seed(seed)
    losses = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for t in VAL_TIMESTEPS:
            eps = torch.randn(x0.shape, generator=g, device=x0.device)
            tt = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
            losses.append(float(torch.mean((model(schedule.add_noise(x0, eps, tt), tt) - eps) ** 2)))
    model.train(was_training)
    return float(np.mean(losses))


def train_prior(cfg: CTPriorConfig, out_dir: str | Path, resume: bool = False,
                progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Train the prior and write ``model.pt`` (EMA weights), ``config.json``, ``log.csv`` and ``val.jsonl``."""
    cfg.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    schedule = cfg.schedule
    sampler, val_x0 = _sources(cfg, device)
    model = build_prior_unet(cfg.model_config).to(device)
    alphas = schedule.alphas_cumprod.to(device)

    def batch_loss(g: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            x0 = sampler.batch(cfg.batch_size, g)
            t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=g, device=device)
            eps = torch.randn(x0.shape, generator=g, device=device)
            ab = alphas[t].float().reshape(-1, 1, 1, 1)
            xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        with autocast(cfg):
            pred = model(xt, t)
        return torch.mean((pred.float() - eps) ** 2)

    return train_loop(cfg, out, model, batch_loss=batch_loss,
                      validate=lambda network: validation_loss(network, schedule, val_x0),
                      initial_state=initial_state, network_note={**DEFAULT_PRIOR_CONFIG, **cfg.model_config},
                      diverged_above=DIVERGED_LOSS, resume=resume, progress=progress)


def initial_state(source: str) -> dict[str, torch.Tensor]:
    """Weights to start from: a shipped prior's id or a ``model.pt`` file."""
    from pipelines.zoo import ZOO_DIR

    card = ZOO_DIR / source / "card.json"
    path = ZOO_DIR / source / json.loads(card.read_text())["weights"] if card.is_file() else Path(source)
    if not path.is_file():
        raise InputError(source, "not a shipped model id or a weights file (model.pt)")
    return {k: v.float() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}


def load_prior(weights: str | Path, model_config: dict[str, Any] | None = None) -> torch.nn.Module:
    """The prior network with ``weights`` (a ``model.pt`` state dict) loaded, in eval mode on the CPU."""
    model = build_prior_unet(model_config)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()
