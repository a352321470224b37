"""Training of the MRI diffusion priors: ``recon train ambient-prior`` and ``recon train diffusion-prior``.

Both train the EDM denoiser of ``models.diffusion.edm`` (complex slices as 2 channels plus a mask channel) on
fastMRI-format directories, with the shared loop of ``pipelines.diffusion_training``:

* ``ambient`` (Aali et al. 2024): from undersampled k-space only. Files that are undersampled (a ``mask``) are
  used as stored; a fully sampled file is undersampled first by a fixed random column mask at ``acceleration``
  (one mask per slice, seeded by the file name and slice), and nothing but the kept columns is ever read from it
  again. Each step takes a further sub-mask of each slice's mask (the centre kept, other sampled columns kept at
  random so that it samples about ``1 / further_acceleration`` of the columns; default ``acceleration + 1``) and
  minimises ``edm.ambient_loss``, which compares ``A D(x_in)`` with the measured ``y`` on the training mask only.
* ``fully-sampled``: from fully sampled k-space (the reference prior), ``edm.denoising_loss`` on the coil-combined
  images.

Coil maps come from each slice's own calibration lines (``acs`` maps, the sampled centre only). Each slice is
scaled so that the 99th percentile of its calibration-only (low-resolution) image magnitude is 1: the scale needs
nothing but the centre lines, so undersampled training data, fully sampled data and a scan to reconstruct are
scaled alike. Validation: the prior's own loss at fixed noise levels and noise on the ``val_slices`` last slices
of the data, which are held out of training.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.diffusion.edm import (
    DEFAULT_MRI_PRIOR_CONFIG,
    EDMPrecond,
    ambient_loss,
    build_mri_prior_unet,
    column_mask_channel,
    complex_noise,
    denoising_loss,
    training_sigmas,
)
from models.physics.mri.masks import calibrated_center_fraction, count_center_lines, random_column_mask
from models.physics.mri.sense import SenseOperator
from pipelines.data import InputError
from pipelines.diffusion_training import LoopConfig, autocast, check_integer, check_number, train_loop
from pipelines.train_prior import initial_state

KINDS = ("ambient", "fully-sampled")
VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0)
DIVERGED_LOSS = 1e4
SCALE_QUANTILE = 0.99


@dataclass
class MRIPriorConfig(LoopConfig):
    kind: str = "ambient"
    data: str | list[str] = "data/brain-bench/train"
    acceleration: float = 4.0  # ambient: the training mask's for fully sampled files
    further_acceleration: float | None = None  # ambient: the further sub-mask's (null: acceleration + 1)
    batch_size: int = 8
    checkpoint_every: int = 200
    val_every: int = 500
    val_slices: int = 8

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        super().check()
        check_integer(self, "size", 16)
        multiple = 2 ** (len({**DEFAULT_MRI_PRIOR_CONFIG, **self.model_config}["channels"]) - 1)
        if self.size % multiple:
            raise ValueError(f"size must be a multiple of {multiple}, got {self.size}")
        check_number(self, "acceleration", 1.0, 64.0)
        if self.further_acceleration is not None:
            check_number(self, "further_acceleration", 1.0, 128.0)
            if self.further_acceleration <= self.acceleration:
                raise ValueError(f"further_acceleration ({self.further_acceleration:g}) must exceed acceleration "
                                 f"({self.acceleration:g}): the further mask is a subset of the training mask")
        data = self.data
        if not (isinstance(data, str) and data) and not (isinstance(data, list) and data
                                                         and all(isinstance(d, str) for d in data)):
            raise ValueError(f"data must be a directory or a list of directories, got {data!r}")

    @property
    def further(self) -> float:
        return self.further_acceleration or self.acceleration + 1.0


def training_files(data: str | list[str]) -> list[Path]:
    files: list[Path] = []
    for entry in [data] if isinstance(data, str) else data:
        directory = Path(entry)
        if not directory.is_dir():
            raise InputError(directory, "not a directory of fastMRI-format .h5 files")
        found = sorted(directory.glob("*.h5"))
        if not found:
            raise InputError(directory, "no .h5 files (simulate them with `recon simulate mri --set train`)")
        files += found
    return files


def slice_mask_seed(name: str, index: int) -> int:
    return zlib.crc32(f"{name}:{index}".encode())


def calibration_scale(kspace: np.ndarray, maps: np.ndarray, num_low: int) -> float:
    """``1 / q99(|S^H F^H k_centre|)``: the scale from the ``num_low`` centre columns only."""
    from models.physics.mri.fft import ifft2c

    w = kspace.shape[-1]
    lo = (w - num_low + 1) // 2
    centre = np.zeros_like(kspace)
    centre[..., lo:lo + num_low] = kspace[..., lo:lo + num_low]
    image = (np.conj(maps) * ifft2c(torch.from_numpy(centre)).numpy()).sum(axis=0)
    q = float(np.quantile(np.abs(image), SCALE_QUANTILE))
    if not q > 0:
        raise ValueError("the calibration lines hold no signal")
    return 1.0 / q


def calibrate(kspace: np.ndarray, num_low: int) -> tuple[np.ndarray, float]:
    """What every user of the priors does to a slice's (masked) k-space first: ACS coil maps from its ``num_low``
    centre columns and its ``calibration_scale``. Training, the card's check and reconstruction all call this."""
    from models.physics.mri.sensitivity import estimate_maps

    maps = estimate_maps(kspace, num_low, "acs").astype(np.complex64)
    return maps, calibration_scale(kspace, maps, num_low)


class PriorData:
    """Every slice of the files, prepared for the prior's kind and held in memory (see the module docstring).

    ``kspace`` (n, C, H, W) complex64, scaled and masked; ``maps`` (n, C, H, W); ``masks`` (n, W) float32;
    ``num_low`` (n,) centre columns.
    """

    def __init__(self, cfg: MRIPriorConfig):
        from pipelines.io.fastmri import read_fastmri

        ks, maps, masks, lows = [], [], [], []
        for path in training_files(cfg.data):
            acq = read_fastmri(path)
            h, w = acq.kspace.shape[-2:]
            if (h, w) != (cfg.size, cfg.size):
                raise InputError(path, f"k-space is {h} x {w}; this prior trains at {cfg.size} x {cfg.size} (set "
                                       f"size in --config, or give files of one size)")
            stored = acq.mask is not None and float(np.mean(acq.mask)) < 0.999
            if cfg.kind == "fully-sampled" and stored:
                raise InputError(path, "is undersampled; diffusion-prior trains on fully sampled k-space (use "
                                       "ambient-prior for undersampled data)")
            for s in range(acq.num_slices):
                k = np.asarray(acq.kspace[s], np.complex64)
                if stored:
                    m = np.asarray(acq.mask, np.float32).reshape(-1)[-w:]
                elif cfg.kind == "ambient":
                    centre = calibrated_center_fraction(w, cfg.acceleration)
                    m = random_column_mask(w, cfg.acceleration, centre, slice_mask_seed(path.name, s)).mask
                    m = np.asarray(m, np.float32).reshape(-1)
                else:
                    m = np.ones(w, np.float32)
                k = k * m  # the columns the prior may see; the rest is never used
                num_low = count_center_lines(m) if cfg.kind == "ambient" else min(24, w)
                if num_low < 2:
                    raise InputError(path, f"slice {s}: fewer than 2 fully sampled centre columns to calibrate on")
                smaps, scale = calibrate(k, num_low)
                ks.append(k * scale)
                maps.append(smaps)
                masks.append(m)
                lows.append(num_low)
        if len(ks) <= cfg.val_slices:
            raise InputError(cfg.data if isinstance(cfg.data, str) else cfg.data[0],
                             f"{len(ks)} slices: need more than val_slices ({cfg.val_slices}) to train on")
        self.kspace = torch.from_numpy(np.stack(ks))
        self.maps = torch.from_numpy(np.stack(maps))
        self.masks = torch.from_numpy(np.stack(masks))
        self.num_low = torch.tensor(lows)
        self.kind = cfg.kind

    def __len__(self) -> int:
        return self.kspace.shape[0]

    def to(self, device: torch.device) -> PriorData:
        for name in ("kspace", "maps", "masks", "num_low"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def images(self, index: torch.Tensor) -> torch.Tensor:
        """Coil-combined images ``S^H F^H k`` of the slices (fully sampled data: the clean images)."""
        return SenseOperator(self.maps[index], None).adjoint(self.kspace[index])


def further_masks(masks: torch.Tensor, num_low: torch.Tensor, further: float, g: torch.Generator) -> torch.Tensor:
    """Sub-masks of ``masks`` (n, W): the centre ``num_low`` columns kept, and other sampled columns kept at
    random so that about ``W / further`` columns remain (never more than the mask has)."""
    n, w = masks.shape
    out = masks.clone()
    for i in range(n):
        lo = (w - int(num_low[i]) + 1) // 2
        centre = torch.zeros(w, dtype=torch.bool)
        centre[lo:lo + int(num_low[i])] = True
        centre = centre.to(masks.device)
        outer = (masks[i] > 0) & ~centre
        target = max(0.0, w / further - float(centre.sum()))
        keep = min(1.0, target / max(1, int(outer.sum())))
        drop = outer & (torch.rand(w, generator=g, device=masks.device) >= keep)
        out[i, drop] = 0.0
    return out


def _ambient_batch_loss(model: EDMPrecond, data: PriorData, index: torch.Tensor, further: float,
                        g: torch.Generator, cfg: MRIPriorConfig) -> torch.Tensor:
    n, (h, w) = len(index), data.kspace.shape[-2:]
    masks = data.masks[index]
    sub = further_masks(masks, data.num_low[index], further, g)
    sigma = training_sigmas(n, g, masks.device)
    noise = complex_noise((n, h, w), g, masks.device)
    maps = data.maps[index]
    A = SenseOperator(maps, masks.reshape(n, 1, 1, w))  # noqa: N806 - math name
    A_further = SenseOperator(maps, sub.reshape(n, 1, 1, w))  # noqa: N806
    with autocast(cfg):
        return ambient_loss(model, data.kspace[index], A, A_further, column_mask_channel(sub, (h, w)), sigma, noise)


def _plain_batch_loss(model: EDMPrecond, data: PriorData, index: torch.Tensor, g: torch.Generator,
                      cfg: MRIPriorConfig) -> torch.Tensor:
    x = data.images(index)
    sigma = training_sigmas(len(index), g, x.device)
    noise = complex_noise(tuple(x.shape), g, x.device)
    with autocast(cfg):
        return denoising_loss(model, x, sigma, noise)


def validation_loss(model: EDMPrecond, data: PriorData, index: torch.Tensor, cfg: MRIPriorConfig,
                    seed: int = 1234) -> float:
    """The prior's own loss on the held-out slices at each of ``VAL_SIGMAS``, fixed noise and sub-masks."""
    was_training = model.training
    model.eval()
    losses = []
    with torch.no_grad():
        for sigma in VAL_SIGMAS:
            g = torch.Generator(data.kspace.device).manual_seed(seed)
            s = torch.full((len(index),), sigma, device=data.kspace.device)
            if data.kind == "ambient":
                masks = data.masks[index]
                n, (h, w) = len(index), data.kspace.shape[-2:]
                sub = further_masks(masks, data.num_low[index], cfg.further, g)
                maps = data.maps[index]
                loss = ambient_loss(model, data.kspace[index], SenseOperator(maps, masks.reshape(n, 1, 1, w)),
                                    SenseOperator(maps, sub.reshape(n, 1, 1, w)), column_mask_channel(sub, (h, w)),
                                    s, complex_noise((n, h, w), g, data.kspace.device))
            else:
                x = data.images(index)
                loss = denoising_loss(model, x, s, complex_noise(tuple(x.shape), g, x.device))
            losses.append(float(loss))
    model.train(was_training)
    return float(np.mean(losses))


def build_model(model_config: dict[str, Any] | None = None) -> EDMPrecond:
    return EDMPrecond(build_mri_prior_unet(model_config))


def train_mri_prior(cfg: MRIPriorConfig, out_dir: str | Path, resume: bool = False, progress=None) -> Path:
    """Train the prior and write ``model.pt`` (EMA weights of the preconditioned denoiser), ``config.json``,
    ``log.csv`` and ``val.jsonl``."""
    cfg.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = PriorData(cfg).to(device)
    n = len(data)
    val_index = torch.arange(n - cfg.val_slices, n, device=device)
    train_n = n - cfg.val_slices
    model = build_model(cfg.model_config).to(device)

    def batch_loss(g: torch.Generator) -> torch.Tensor:
        index = torch.randint(0, train_n, (cfg.batch_size,), generator=g, device=device)
        if cfg.kind == "ambient":
            return _ambient_batch_loss(model, data, index, cfg.further, g, cfg)
        return _plain_batch_loss(model, data, index, g, cfg)

    return train_loop(cfg, out, model, batch_loss=batch_loss,
                      validate=lambda network: validation_loss(network, data, val_index, cfg),
                      initial_state=initial_state, network_note={**DEFAULT_MRI_PRIOR_CONFIG, **cfg.model_config,
                                                                 "kind": cfg.kind},
                      diverged_above=DIVERGED_LOSS, resume=resume, progress=progress)
