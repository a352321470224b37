"""Ship a CT diffusion prior's training run (``recon zoo ship RUN --id ID`` on a ``recon train ct-prior`` run).

Staged like the MRI networks (``pipelines.ship``): weights and card, the denoising check on held-out slices, and
the ONNX engine checked against torch are prepared in a staging directory inside the zoo, which replaces
``<zoo>/<id>/`` only when every step succeeded.

The card's metric is the network's one job, denoising: on the pseudo-CT brain's held-out test slab (never
sampled in training) each slice is noised to timestep ``t`` and the Tweedie estimate
``(x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)`` is scored against it, next to the noisy input
``x_t / sqrt(abar_t)`` (PSNR with the slice's data range).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from models.diffusion.network import DEFAULT_PRIOR_CONFIG
from models.diffusion.schedule import VPSchedule, tweedie
from pipelines.data import InputError
from pipelines.zoo import ZOO_DIR, ModelError, load_card, model_dir, save_card, sha256_of

ONNX_FILE = "model.onnx"
MIN_PARITY_DB = 80.0
DENOISING_TIMESTEPS = (50, 200, 500)
DATA_NOTE = ("pseudo-CT brain built from the ICBM152 2009 template (one brain): axial slices from MNI z -72..0 mm "
             "and 83..95 mm, each with a random rotation (15 deg), tilt (3 deg), scale (10%), shift (10 mm), smooth "
             "warp (3 mm), left-right flip, random tissue HU and skull/scalp thickness; 128 x 128 at 2 mm. Held out: "
             "the test slab, z 10..73 mm, which no training point comes within 1 mm of")

Progress = Callable[[str], None]
T = TypeVar("T")


def is_prior_run(run: Path) -> bool:
    """Whether ``run`` is a ``recon train ct-prior`` run (its config names a diffusion network and no MRI prior
    kind)."""
    try:
        config = json.loads((Path(run) / "config.json").read_text())
        return "network" in config and config.get("kind") not in ("ambient", "fully-sampled")
    except (OSError, json.JSONDecodeError):
        return False


def training_command(run: Path, config: dict[str, Any]) -> str:
    """The ``recon train ct-prior`` command that reproduces the run."""
    from pipelines.ship import train_command
    from pipelines.train_prior import CTPriorConfig

    return train_command("ct-prior", run, config, asdict(CTPriorConfig()), {"data": "--data", "init_from": "--init"})


def read_prior_run(run: Path, what: str, config_type: type[T]) -> tuple[dict[str, Any], T, list[dict[str, str]]]:
    """A finished prior training run's ``config.json`` (raw, and as ``config_type``) and ``log.csv`` rows;
    ``InputError`` naming the file a run of ``what`` lacks."""
    for name in ("config.json", "log.csv", "model.pt", "val.jsonl"):
        if not (run / name).is_file():
            raise InputError(run, f"not a finished {what} training run: {name} is missing")
    config = json.loads((run / "config.json").read_text())
    cfg = config_type(**{k.name: config[k.name] for k in fields(config_type) if k.name in config})
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return config, cfg, rows


def prior_training(run: Path, config: dict[str, Any], cfg: Any, rows: list[dict[str, str]], data_note: str,
                   validation_note: str, command: str, zoo: Path) -> dict[str, Any]:
    """The card's training record of a prior run, with the history of the shipped prior it continued."""
    training = {
        "data": data_note,
        "recipe": {k: config[k] for k in asdict(cfg) if k in config},
        "command": command,
        "steps": int(rows[-1]["step"]) if rows else 0,
        "seconds": float(rows[-1]["seconds"]) if rows else 0.0,
        "machine": config.get("machine", "not recorded"),
        "validation": [json.loads(line) for line in (run / "val.jsonl").read_text().splitlines() if line.strip()],
        "validation_note": validation_note,
        "date": date.today().isoformat(),
    }
    earlier = earlier_training(config.get("init_from"), zoo)
    if earlier:
        training["continued_from"] = earlier
        training["total_steps"] = training["steps"] + earlier.get("total_steps", earlier["steps"])
    return training


def earlier_training(init_from: str | None, zoo: Path) -> dict[str, Any] | None:
    """The training record of the shipped prior a run was started from, so that a continued run's card tells its
    whole history. ``init_from`` is a zoo id, or the weights file of one (checked by its checksum); None for a run
    from scratch or from other weights."""
    if not init_from:
        return None
    path = Path(init_from)
    model_id = init_from if (Path(zoo) / init_from / "card.json").is_file() else path.parent.name
    if not (Path(zoo) / model_id / "card.json").is_file():
        return None
    card = load_card(model_id, zoo)
    if model_id != init_from and not (path.is_file() and sha256_of(path) == card["sha256"]):
        return None
    return {"model_id": model_id, "sha256": card["sha256"], **card.get("training", {})}


def _mean_psnr(refs: np.ndarray, images: np.ndarray) -> float:
    from pipelines.metrics import psnr

    return round(float(np.mean([psnr(r, i) for r, i in zip(refs, images, strict=True)])), 2)


def denoising_metrics(network: torch.nn.Module, schedule: VPSchedule, size: int, pixel_mm: float,
                      slices: int = 16, seed: int = 0) -> dict[str, Any]:
    """Tweedie denoising PSNR on ``slices`` slices of the brain's held-out test slab at ``DENOISING_TIMESTEPS``."""
    from pipelines.simulate.prior_slices import TEST_SLAB_Z_MM, brain_source, fixed_slices, slab_heights

    heights = slab_heights(TEST_SLAB_Z_MM)
    heights = heights[np.linspace(0, len(heights) - 1, slices).round().astype(int)]
    x0 = fixed_slices(brain_source(randomise_tissue=False), heights, size, pixel_mm)
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    with torch.no_grad():
        for t in DENOISING_TIMESTEPS:
            ab = schedule.abar(t)
            eps = torch.randn(x0.shape, generator=g)
            xt = ab ** 0.5 * x0 + (1 - ab) ** 0.5 * eps
            est = tweedie(xt, network(xt, torch.full((len(x0),), t)), ab)
            ref, noisy, denoised = x0[:, 0].numpy(), (xt / ab ** 0.5)[:, 0].numpy(), est[:, 0].numpy()

            out[f"t={t}"] = {"noise_std": round(((1 - ab) / ab) ** 0.5, 4), "noisy_psnr": _mean_psnr(ref, noisy),
                             "denoised_psnr": _mean_psnr(ref, denoised)}
    return {"test_slab": {"slices": slices, "z_mm": [float(heights[0]), float(heights[-1])],
                          "units": "HU / 1000", "psnr": "fastMRI definition (peak = reference max)", **out}}


def export_prior_onnx(network: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Export with dynamic batch, height and width; check ONNX Runtime CPU against torch on another shape."""
    from models.engine.onnx_export import export_onnx
    from models.engine.session import create_session
    from pipelines.engines import parity_psnr

    dyn = torch.export.Dim.DYNAMIC
    export_onnx(network, (torch.randn(2, 1, 64, 64), torch.tensor([10, 500])), path,
                dynamic_shapes=({0: dyn, 2: dyn, 3: dyn}, {0: dyn}), output_names=["eps"])
    session, _ = create_session(path, ("CPUExecutionProvider",))
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 1, 48, 80, generator=g), torch.tensor([0, 250, 999])
    with torch.no_grad():
        expected = network(x, t).numpy()
    got = session.run(None, {"x": x.numpy(), "timesteps": t.numpy()})[0]
    psnr_db = parity_psnr(torch.from_numpy(expected), torch.from_numpy(got), mse_floor=1e-30)
    return {"format": "onnx", "fft": "none", "sha256": sha256_of(path), "parity_psnr_db_vs_torch": round(psnr_db, 1),
            "parity_max_abs_diff": float(np.abs(got - expected).max()), "dynamic_axes": "batch, H, W",
            "inputs": "x (N, 1, H, W) float32, timesteps (N,) int64; output eps (N, 1, H, W)"}


def ship_prior_run(run: Path, model_id: str, zoo: Path = ZOO_DIR, progress: Progress | None = None,
                   data_note: str | None = None) -> Path:
    """Stage ``run/model.pt`` as ``model_id`` with card, denoising metrics and ONNX engine; then put it into the
    zoo in one step. Returns the card's path. The zoo is unchanged when any step fails."""
    from pipelines.ship import require_parity, staged_model
    from pipelines.train_prior import CTPriorConfig

    run, zoo = Path(run), Path(zoo)
    config, cfg, rows = read_prior_run(run, "ct-prior", CTPriorConfig)
    brain = cfg.data == "brain"
    note = data_note or (DATA_NOTE if brain else f"user volumes: {cfg.data}")
    # the slices train_prior validates on: the brain's tuning slab, or the user's first volume (trained on too)
    where = ("the brain's tuning slab, inside the training range" if brain else
             "the first training volume's own slices, which it also trains on")
    training = prior_training(run, config, cfg, rows, note,
                              "mean ||eps_hat - eps||^2 at t = 20, 100, 300, 600, 900 on fixed unaugmented slices "
                              f"({where}); 1.0 untrained", training_command(run, config), zoo)
    network_config = {**DEFAULT_PRIOR_CONFIG, **config.get("network", {})}
    with staged_model(model_id, "ct-prior", network_config, run / "model.pt", {"training": training},
                      zoo) as (staging, network, card):
        card["schedule"] = asdict(cfg.schedule)
        card["image"] = {"size": cfg.size, "pixel_mm": cfg.pixel_mm, "units": "HU / 1000"}
        if progress:
            progress(f"{model_id}: denoising check on the held-out test slab")
        card["metrics"] = {"denoising": denoising_metrics(network, cfg.schedule, cfg.size, cfg.pixel_mm)}
        if progress:
            progress(f"{model_id}: exporting the ONNX engine")
        engine = export_prior_onnx(network, model_dir(model_id, staging) / ONNX_FILE)
        require_parity(ONNX_FILE, engine["parity_psnr_db_vs_torch"], MIN_PARITY_DB)
        card["engines"] = {ONNX_FILE: engine}
        save_card(card, staging)
    return model_dir(model_id, zoo) / "card.json"


def verified_prior_onnx(model_id: str, zoo: Path = ZOO_DIR) -> Path:
    """The prior's ONNX engine, checked against the checksum in its card."""
    card = load_card(model_id, zoo)
    path = model_dir(model_id, zoo) / ONNX_FILE
    listed = (card.get("engines") or {}).get(ONNX_FILE)
    if not path.is_file() or listed is None:
        raise ModelError(f"{model_id} ships no ONNX engine ({path}); ship it again with `recon zoo ship`")
    if sha256_of(path) != listed["sha256"]:
        raise ModelError(f"{path}: checksum mismatch with the card; the engine is corrupt or was replaced")
    return path
