"""Training of the unrolled MRI networks (RecurrentVarNet, RIM) on fastMRI-format directories.

Each step draws a fully sampled training slice, a fresh random column mask at one of the training
accelerations (mixed 4x/8x by default), estimates ACS sensitivity maps from the masked data, divides
the masked k-space and the target by the 99th percentile of ``|masked k-space|`` and minimises
``L1 + (1 - SSIM)`` between the magnitude of the network output (cropped to the recon matrix) and the
RSS reference. RIM's loss is averaged over all its iterates (``iterate_loss`` does the same for
RecurrentVarNet's blocks); ``flip_augment`` applies a random flip/transpose to each slice; with
``ema_decay`` > 0 the validated and saved weights are an exponential moving average of the trained ones
(``w_ema <- d w_ema + (1 - d) w`` after every step). Everything is
seeded by ``seed`` and the step number, so a run resumed from a checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.losses import l1_ssim_loss
from models.physics.mri.masks import calibrated_center_fraction, random_column_mask
from models.unrolled import build_model, count_parameters
from pipelines.data import InputError, MRIAcquisition
from pipelines.learned import collate, magnitude, network_outputs, prepare_input, reconstruct_acquisition
from pipelines.metrics import psnr, ssim


def default_model_config(kind: str) -> dict[str, Any]:
    """The architecture ``recon train KIND`` uses unless ``--config`` says otherwise (declared by the method,
    sized so training finishes on a 2-core CPU; the model cards record the time)."""
    from pipelines.reconstructors import learned_model

    return dict(learned_model(kind).train_config)


CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"


@dataclass
class TrainConfig:
    model: str = "recurrentvarnet"
    model_config: dict[str, Any] = field(default_factory=dict)
    data: str | list[str] = "data/brain-bench/train"  # one directory or several
    val_data: str | None = "data/brain-bench/val"
    accelerations: tuple[float, ...] = (4.0, 8.0)
    steps: int = 2000
    batch_size: int = 1
    lr: float = 5e-4
    warmup_steps: int = 100
    lr_decay_every: int = 1000
    lr_gamma: float = 0.5
    ssim_weight: float = 1.0
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    val_every: int = 500
    val_max_files: int | None = 4
    seed: int = 0
    threads: int | None = None
    init_from: str | None = None  # start from these weights (a zoo model id or a state-dict file): fine-tuning
    iterate_loss: bool = False  # loss averaged over every block's image (RIM is always trained so)
    flip_augment: bool = False  # random flips (and transposes of square slices) of each training slice
    ema_decay: float = 0.0  # > 0: validate and ship an exponential moving average of the weights
    randomize: dict[str, Any] = field(default_factory=dict)  # data "randomized-brain": its ranges (RandomBrainConfig)
    randomized_fraction: float = 0.5  # data mixing "randomized-brain" with directories: share of randomized steps

    def check(self) -> None:
        """Refuse settings a run cannot use (a ``ValueError`` naming the setting), before any work."""
        def integer(name: str, low: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}{' or null' if optional else ''}, got {value!r}")

        def number(name: str, low: float, high: float = math.inf, low_open: bool = False) -> None:
            value = getattr(self, name)
            ok = (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                  and (value > low if low_open else value >= low) and value <= high)
            if not ok:
                bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")

        if not isinstance(self.model_config, dict):
            raise ValueError(f"model_config must be a JSON object, got {self.model_config!r}")
        for name in ("batch_size", "lr_decay_every", "checkpoint_every", "val_every"):
            integer(name, 1)
        integer("steps", 0)  # 0: the starting weights as they are
        integer("warmup_steps", 0)
        integer("seed", 0)
        integer("val_max_files", 1, optional=True)
        integer("threads", 1, optional=True)
        number("lr", 0.0, low_open=True)
        number("lr_gamma", 0.0, low_open=True)
        number("ssim_weight", 0.0)
        number("grad_clip", 0.0)
        decay = self.ema_decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 <= decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (a number), got {decay!r}")
        accelerations = self.accelerations
        if (not isinstance(accelerations, list | tuple) or not accelerations
                or not all(isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) and a >= 1
                           for a in accelerations)):
            raise ValueError(f"accelerations must be a non-empty list of numbers >= 1, got {accelerations!r}")
        for name in ("iterate_loss", "flip_augment"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.randomize, dict):
            raise ValueError(f"randomize must be a JSON object, got {self.randomize!r}")
        data = self.data
        if not (isinstance(data, str) and data) and not (
                isinstance(data, list) and data and all(isinstance(d, str) and d for d in data)):
            raise ValueError(f"data must be a directory or a non-empty list of directories, got {data!r}")
        if uses_randomized(data):
            from pipelines.simulate.randomized import RandomBrainConfig

            RandomBrainConfig.from_dict(self.randomize)
            if self.batch_size != 1:
                raise ValueError("batch_size must be 1 with randomized-brain data (every slice has its own size)")
        elif self.randomize:
            raise ValueError(f"randomize sets the ranges of --data {RANDOMIZED}; the data here is {self.data!r}")
        number("randomized_fraction", 0.0, 1.0)
        for name in ("val_data", "init_from"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"{name} must be a path (text) or null, got {value!r}")


class TrainingDiverged(ValueError):
    """The loss left the range a training run can come back from; the last checkpoint is kept."""


# the loss is scale-free (L1 / mean|target| + 1 - SSIM): about 2 for an all-zero image, below 1 once the network
# learns anything, so a loss this large means the weights blew up
DIVERGED_LOSS = 1e3


# ``TrainConfig.data`` naming the domain-randomised brain slices drawn on the fly instead of directories
RANDOMIZED = "randomized-brain"


def as_directories(data: str | Path | list[str]) -> list[Path]:
    """``TrainConfig.data`` (one directory or several) as a list of paths, leaving out randomized-brain."""
    entries = [data] if isinstance(data, str | Path) else data
    return [Path(d) for d in entries if d != RANDOMIZED]


def uses_randomized(data: str | Path | list[str]) -> bool:
    """Whether ``TrainConfig.data`` draws domain-randomised slices (alone, or mixed with directories)."""
    return data == RANDOMIZED or (isinstance(data, list) and RANDOMIZED in data)


class TrainingSlices:
    """Every slice of every fully sampled file in one or more fastMRI-format directories, held in memory."""

    def __init__(self, directories: str | Path | list[str]):
        from pipelines.io.fastmri import read_fastmri

        files = []
        for directory in as_directories(directories):
            found = sorted(directory.glob("*.h5"))
            if not found:
                raise InputError(directory, "no .h5 training files (simulate them with "
                                            "`recon simulate mri --set train`)")
            files += found
        self.volumes: list[MRIAcquisition] = []
        for f in files:
            acq = read_fastmri(f)
            if acq.reference is None:
                raise InputError(f, "has no reconstruction_rss reference to train against")
            if acq.mask is not None and acq.mask.mean() < 0.999:
                raise InputError(f, "is undersampled; training needs fully sampled k-space")
            self.volumes.append(acq)
        self.index = [(v, s) for v in range(len(self.volumes)) for s in range(self.volumes[v].num_slices)]

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, i: int, acceleration: float, mask_seed: int, transform: int = 0
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Slice ``i`` under a fresh column mask; ``transform`` in [0, 8) picks a flip/transpose (0: as stored)."""
        v, s = self.index[i]
        acq = self.volumes[v]
        k, reference = acq.kspace[s], acq.reference[s]
        if transform:
            k, reference = flip_slice(k, reference, transform)
        width = k.shape[-1]
        m = random_column_mask(width, acceleration, calibrated_center_fraction(width, acceleration), mask_seed)
        inputs = prepare_input(k, m.mask, m.num_low_frequencies)
        return inputs, torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))


class RandomizedSlices:
    """Domain-randomised brain slices drawn on the fly (``pipelines.simulate.randomized``), each a function of its
    seed: its own anatomy warp, contrast, matrix size, coils, SNR, mask kind and acceleration."""

    def __init__(self, ranges: dict[str, Any]):
        from pipelines.simulate.randomized import RandomBrainConfig

        self.config = RandomBrainConfig.from_dict(ranges)

    def sample(self, seed: int, transform: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor, float]:
        """The slice of ``seed`` under its own mask: network inputs, reference, and the drawn acceleration."""
        from pipelines.simulate.randomized import draw_slice

        drawn = draw_slice(seed, self.config)
        k, reference = drawn.kspace, drawn.reference
        if transform:
            k, reference = flip_slice(k, reference, transform)
        inputs = prepare_input(k, drawn.mask, drawn.num_low_frequencies)
        return inputs, torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32)), drawn.draw["acceleration"]


def flip_slice(kspace: np.ndarray, reference: np.ndarray, transform: int) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 flips/transposes of a slice, applied to its coil images and its reference alike.

    ``transform`` bits: 1 flips rows, 2 flips columns, 4 transposes (square slices only; otherwise it is
    ignored, so the readout stays along the rows). The coil k-space is ``F(flip(F^-1 k))``.
    """
    from models.physics.mri.fft import fft2c, ifft2c

    image = ifft2c(torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64))).numpy()
    square = image.shape[-1] == image.shape[-2] and reference.shape[-1] == reference.shape[-2]
    for bit, op in ((1, lambda a: np.flip(a, -2)), (2, lambda a: np.flip(a, -1)),
                    (4, lambda a: np.swapaxes(a, -1, -2) if square else a)):
        if transform & bit:
            image, reference = op(image), op(reference)
    kspace = fft2c(torch.from_numpy(np.ascontiguousarray(image))).numpy()
    return kspace, np.ascontiguousarray(reference)


def lr_at(step: int, cfg: TrainConfig) -> float:
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    return cfg.lr * warm * cfg.lr_gamma ** (step // max(cfg.lr_decay_every, 1))


def validation_files(directory: str | Path, max_files: int | None = None) -> list[Path]:
    """The ``.h5`` files of ``directory``, or ``max_files`` of them spread evenly over the sorted list (so a
    directory sorted by contrast and acceleration is sampled across all of them, not just its first ones)."""
    files = sorted(Path(directory).glob("*.h5"))
    if max_files is None or max_files >= len(files):
        return files
    return [files[int(i * len(files) / max_files)] for i in range(max_files)]


def validate(model: torch.nn.Module, directory: str | Path, max_files: int | None = None) -> dict[str, float]:
    """PSNR/SSIM of the model on undersampled files with references (their own masks)."""
    from pipelines.io.fastmri import read_fastmri
    from pipelines.sampling import acquisition_mask

    files = validation_files(directory, max_files)
    if not files:
        raise InputError(directory, "no .h5 validation files")
    model.eval()
    scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
    with torch.no_grad():
        for f in files:
            acq = read_fastmri(f)
            mask, num_low = acquisition_mask(acq)
            volume = np.abs(reconstruct_acquisition(model, acq, mask, num_low))
            scores["psnr"].append(psnr(acq.reference, volume))
            scores["ssim"].append(ssim(acq.reference, volume))
    model.train()
    return {k: float(np.mean(v)) for k, v in scores.items()}


def initial_weights(model: torch.nn.Module, source: str) -> None:
    """Load the starting weights for fine-tuning: a zoo model id (checksum verified against its card) or a
    ``.pt`` state-dict file; the architecture must match."""
    from pipelines.zoo import ModelError, load_model

    if Path(source).is_file():
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as err:
            raise ModelError(f"{source}: cannot start from these weights: {str(err).splitlines()[0]}") from err
        return
    shipped, card = load_model(source)
    if type(shipped) is not type(model):
        raise ModelError(f"model {source!r} is a {card['kind']}, not the network being trained")
    try:
        model.load_state_dict(shipped.state_dict(), strict=True)
    except RuntimeError as err:
        raise ModelError(f"model {source!r} ({card['kind']}, {card['config']}) does not fit the configuration "
                         f"being trained: {str(err).splitlines()[0]}") from err


def weight_average(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights (None when ``decay`` is 0)."""
    if not isinstance(decay, int | float) or not 0 <= decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1) (a number), got {decay!r}")
    if decay == 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _save_checkpoint(path: Path, model, optimizer, step: int, cfg: TrainConfig,
                     average: torch.nn.Module | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "config": asdict(cfg), "average": average.state_dict() if average is not None else None}, tmp)
    tmp.replace(path)  # atomic: a kill during the save never leaves a broken checkpoint


def _checkpoint_step(path: Path) -> int | str:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["step"])
    except Exception:  # only for a message: an unreadable checkpoint is reported by --resume
        return "?"


def truncate_log(log_path: Path, step: int) -> float:
    """Drop log rows after the checkpoint's ``step`` (a killed run may have flushed some); returns the training
    seconds logged at that step (the ``seconds`` column; the first column is the step)."""
    with open(log_path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(log_path, "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    return float(body[-1][header.index("seconds")]) if body else 0.0


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False,
          progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Train ``cfg.model`` and write ``model.pt``, ``config.json``, ``log.csv`` and ``val.jsonl`` to ``out_dir``."""
    cfg.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.val_data and not any(Path(cfg.val_data).glob("*.h5")):
        raise InputError(cfg.val_data, "no .h5 validation files (give --val-data, or \"val_data\": null in --config)")
    randomized = RandomizedSlices(cfg.randomize) if uses_randomized(cfg.data) else None
    directories = as_directories(cfg.data)
    data = TrainingSlices(directories) if directories else None
    model = build_model(cfg.model, cfg.model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = 0
    ckpt = None
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"]["model"] != cfg.model or ckpt["config"]["model_config"] != cfg.model_config:
            raise ValueError(f"{ckpt_path}: checkpoint is for another model configuration")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
    elif cfg.init_from:
        initial_weights(model, cfg.init_from)
    average = weight_average(model, cfg.ema_decay)
    if average is not None and ckpt is not None and ckpt.get("average") is not None:
        average.load_state_dict(ckpt["average"])
    kept = average.module if average is not None else model  # what is validated and saved
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "parameters": count_parameters(model)}, indent=2))
    log_path = out / "log.csv"
    new_log = not (resume and log_path.exists())
    elapsed = 0.0 if new_log else truncate_log(log_path, start)
    with open(log_path, "w" if new_log else "a", newline="") as log_file:
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["step", "loss", "lr", "acceleration", "seconds"])
        model.train()
        t0 = time.perf_counter() - elapsed  # the seconds column counts on across resumes
        for step in range(start, cfg.steps):
            rng = np.random.default_rng([cfg.seed, step])
            # a mixed run picks the source from its own stream, so each source draws as it would alone
            if randomized is not None and (
                    data is None or np.random.default_rng([cfg.seed, step, 1]).uniform() < cfg.randomized_fraction):
                seed = int(rng.integers(2**31))
                flip = int(rng.integers(0, 8)) if cfg.flip_augment else 0
                sample_inputs, reference, acc = randomized.sample(seed, flip)
                inputs, target = collate([sample_inputs]), reference[None]
            else:
                acc = float(rng.choice(cfg.accelerations))
                picks = rng.integers(0, len(data), size=cfg.batch_size)
                seeds = [int(rng.integers(2**31)) for _ in picks]
                # drawn after the mask seeds, so runs without augmentation see the same slices and masks as before
                flips = rng.integers(0, 8, size=len(picks)) if cfg.flip_augment else np.zeros(len(picks), int)
                samples = [data.sample(int(i), acc, m, int(f)) for i, m, f in zip(picks, seeds, flips, strict=True)]
                inputs = collate([s[0] for s in samples])
                target = torch.stack([s[1] for s in samples])
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            forward = model.iterates if cfg.iterate_loss else model
            preds = [magnitude(o) for o in network_outputs(forward, inputs, tuple(target.shape[-2:]))]
            loss = sum(l1_ssim_loss(p, target, cfg.ssim_weight) for p in preds) / len(preds)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value) or loss_value > DIVERGED_LOSS:  # before the step: the checkpoint
                checkpoint = f"the checkpoint of step {_checkpoint_step(ckpt_path)} is kept in {ckpt_path}" \
                    if ckpt_path.exists() else "no checkpoint was written"
                raise TrainingDiverged(
                    f"training diverged at step {step + 1}: the loss is {loss_value:g} (L1 + SSIM starts at a few "
                    f"units and falls below 1 as the network learns); lower the learning rate (lr is {cfg.lr:g}, "
                    f"e.g. --config '{{\"lr\": {min(cfg.lr / 10, 5e-4):g}}}'); {checkpoint}")
            optimizer.zero_grad()
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if average is not None:
                average.update_parameters(model)
            log.writerow([step + 1, f"{loss_value:.6f}", f"{lr_at(step, cfg):.3e}", round(acc, 3),
                          f"{time.perf_counter() - t0:.1f}"])
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                log_file.flush()
                _save_checkpoint(ckpt_path, model, optimizer, step + 1, cfg, average)
            if cfg.val_data and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
                scores = validate(kept, cfg.val_data, cfg.val_max_files)
                with open(out / "val.jsonl", "a") as f:
                    f.write(json.dumps({"step": step + 1, **scores}) + "\n")
            if progress:
                progress(step + 1, cfg.steps, loss_value)
    torch.save(kept.state_dict(), out / WEIGHTS)
    return out / WEIGHTS
