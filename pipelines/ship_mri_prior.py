"""Ship an MRI diffusion prior's training run (``recon zoo ship RUN --id ID`` on a ``recon train ambient-prior`` or
``diffusion-prior`` run), staged like the CT prior (``pipelines.ship_prior``).

The card's metric is the network's one job, denoising, on held-out slices: fully sampled slices of the simulated
brain's test split (never trained on), scaled as in training (``calibration_scale``), noised at each of
``DENOISING_SIGMAS`` and denoised the way the prior is used when sampling (an ambient prior sees the noisy image
projected through a fixed further mask, ``A~^H A~ x_sigma``, and that mask as its channel; a fully sampled prior
sees ``x_sigma`` and a mask of ones). PSNR of the magnitudes against the clean image, next to the noisy input's.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.diffusion.edm import DEFAULT_MRI_PRIOR_CONFIG, RHO, SIGMA_DATA, SIGMA_MAX, SIGMA_MIN, EDMPrecond
from pipelines.ship_prior import (
    MIN_PARITY_DB,
    ONNX_FILE,
    Progress,
    prior_training,
    read_prior_run,
    verified_prior_onnx,
)
from pipelines.zoo import ZOO_DIR, model_dir, save_card, sha256_of

KIND = "mri-prior"
DENOISING_SIGMAS = (0.1, 0.5)
TEST_SLICES = 8
DATA_NOTE = {
    "ambient": "simulated brain training split (recon simulate mri --set train: ICBM152 template, T1/T2/PD, axial "
               "training slabs, 8 coils, 128 x 128, SNR 30 dB), each slice undersampled once by a fixed random "
               "column mask at the run's acceleration before training: only those columns were ever read",
    "fully-sampled": "simulated brain training split (recon simulate mri --set train: ICBM152 template, T1/T2/PD, "
                     "axial training slabs, 8 coils, 128 x 128, SNR 30 dB), fully sampled",
}

verified_mri_prior_onnx = verified_prior_onnx


def is_mri_prior_run(run: Path) -> bool:
    """Whether ``run`` is a ``recon train ambient-prior`` / ``diffusion-prior`` run."""
    try:
        config = json.loads((Path(run) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "network" in config and config.get("kind") in ("ambient", "fully-sampled")


def training_command(run: Path, config: dict[str, Any]) -> str:
    """The ``recon train ambient-prior`` / ``diffusion-prior`` command that reproduces the run."""
    from pipelines.ship import train_command
    from pipelines.train_mri_prior import MRIPriorConfig

    ambient = config["kind"] == "ambient"
    return train_command("ambient-prior" if ambient else "diffusion-prior", run, config, asdict(MRIPriorConfig()),
                         {"data": "--data", "acceleration": "--acceleration", "init_from": "--init"},
                         always={"acceleration"} if ambient else (),
                         skip={"kind"} if ambient else {"kind", "acceleration"})


def held_out_slices(size: int, slices: int = TEST_SLICES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean coil-combined images ``(n, H, W)`` and their maps of fully sampled slices of the brain's test split,
    scaled as in training (T1, T2 and PD in turn)."""
    from models.physics.mri.sense import SenseOperator
    from pipelines.simulate import mri
    from pipelines.train_mri_prior import calibrate

    cfg = mri.MRISimulationConfig(size=size, slices=4)
    starts = mri.slab_starts("axial", "test", cfg)
    images, all_maps = [], []
    contrasts = ("t1", "t2", "pd")
    for i in range(-(-slices // cfg.slices)):
        acq = mri.simulate_slab(contrasts[i % 3], "axial", starts[i % len(starts)], 1.0, cfg, seed=seed + i)
        for k in acq.kspace:
            k = np.asarray(k, np.complex64)
            maps, scale = calibrate(k, 24)
            m = torch.from_numpy(maps)
            images.append(SenseOperator(m, None).adjoint(torch.from_numpy(k * scale)))
            all_maps.append(m)
    return torch.stack(images[:slices]), torch.stack(all_maps[:slices])


def sampling_further_mask(width: int, prior: dict[str, Any], seed: int) -> tuple[torch.Tensor, int]:
    """The fixed further mask an ambient prior is used with: a random column mask at the training acceleration,
    thinned to ``further_acceleration`` as in training. Returns ``(mask (W,), centre columns)``."""
    from models.physics.mri.masks import calibrated_center_fraction, count_center_lines, random_column_mask
    from pipelines.train_mri_prior import further_masks

    r = float(prior["acceleration"])
    m = np.asarray(random_column_mask(width, r, calibrated_center_fraction(width, r), seed).mask, np.float32)
    m = m.reshape(-1)
    low = count_center_lines(m)
    sub = further_masks(torch.from_numpy(m)[None], torch.tensor([low]), float(prior["further_acceleration"]),
                        torch.Generator().manual_seed(seed))
    return sub[0], low


def denoising_metrics(model: EDMPrecond, prior: dict[str, Any], size: int, seed: int = 0) -> dict[str, Any]:
    from models.diffusion.edm import column_mask_channel, complex_noise, edm_denoise
    from models.physics.mri.sense import SenseOperator
    from pipelines.metrics import psnr

    x, maps = held_out_slices(size)
    g = torch.Generator().manual_seed(seed)
    kw: dict[str, Any] = {}
    if prior["kind"] == "ambient":
        sub, _ = sampling_further_mask(size, prior, seed)
        kw = {"A_further": SenseOperator(maps, sub.reshape(1, 1, 1, -1)),
              "further_mask": column_mask_channel(sub, (size, size))}
    ref = x.abs().numpy()

    def mean_psnr(images: torch.Tensor) -> float:
        return round(float(np.mean([psnr(r, i) for r, i in zip(ref, images.abs().numpy(), strict=True)])), 2)

    out: dict[str, Any] = {}
    with torch.no_grad():
        for sigma in DENOISING_SIGMAS:
            noisy = x + sigma * complex_noise(tuple(x.shape), g)
            den = edm_denoise(model, noisy, sigma, **kw)
            out[f"sigma={sigma:g}"] = {"noisy_psnr": mean_psnr(noisy), "denoised_psnr": mean_psnr(den)}
    return {"held_out": {"slices": len(x), "data": "fully sampled slices of the simulated brain's test split "
                                                    "(T1, T2, PD; never trained on), scaled as in training",
                         "input": "projected through a fixed further mask (ambient prior)" if kw else "x + sigma n",
                         "psnr": "of magnitudes, fastMRI definition (peak = reference max)", **out}}


def export_mri_prior_onnx(model: EDMPrecond, path: Path) -> dict[str, Any]:
    """Export the preconditioned denoiser with dynamic batch, height and width; check ONNX Runtime against torch
    on another shape."""
    from models.engine.onnx_export import export_onnx
    from models.engine.session import create_session
    from pipelines.engines import parity_psnr

    dyn = torch.export.Dim.DYNAMIC
    export_onnx(model, (torch.randn(2, 2, 64, 64), torch.tensor([0.5, 2.0]), torch.ones(2, 1, 64, 64)), path,
                dynamic_shapes=({0: dyn, 2: dyn, 3: dyn}, {0: dyn}, {0: dyn, 2: dyn, 3: dyn}),
                output_names=["denoised"])
    session, _ = create_session(path, ("CPUExecutionProvider",))
    g = torch.Generator().manual_seed(1)
    x, sigma = torch.randn(3, 2, 48, 80, generator=g), torch.tensor([0.01, 0.3, 5.0])
    mask = (torch.rand(3, 1, 1, 80, generator=g) < 0.4).float().expand(3, 1, 48, 80).contiguous()
    with torch.no_grad():
        expected = model(x, sigma, mask).numpy()
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, (x.numpy(), sigma.numpy(), mask.numpy()), strict=True)))[0]
    psnr_db = parity_psnr(torch.from_numpy(expected), torch.from_numpy(got), mse_floor=1e-30)
    return {"format": "onnx", "fft": "none", "sha256": sha256_of(path), "parity_psnr_db_vs_torch": round(psnr_db, 1),
            "parity_max_abs_diff": float(np.abs(got - expected).max()), "dynamic_axes": "batch, H, W",
            "inputs": "x (N, 2, H, W) float32 (real, imaginary), sigma (N,) float32, mask (N, 1, H, W) float32; "
                      "output the EDM denoiser D (N, 2, H, W)"}


def ship_mri_prior_run(run: Path, model_id: str, zoo: Path = ZOO_DIR, progress: Progress | None = None,
                       data_note: str | None = None) -> Path:
    """Stage ``run/model.pt`` as ``model_id`` with card, denoising metrics and ONNX engine; then put it into the
    zoo in one step. Returns the card's path. The zoo is unchanged when any step fails."""
    from pipelines.ship import require_parity, staged_model
    from pipelines.train_mri_prior import MRIPriorConfig

    run, zoo = Path(run), Path(zoo)
    config, cfg, rows = read_prior_run(run, "MRI prior", MRIPriorConfig)
    training = prior_training(run, config, cfg, rows, data_note or DATA_NOTE[cfg.kind],
                              "the prior's own training loss on the last val_slices slices of its data (held out of "
                              "training) at sigma = 0.05, 0.2, 0.5, 1, 2 with fixed noise (and fixed further masks)",
                              training_command(run, config), zoo)
    network_config = {k: v for k, v in {**DEFAULT_MRI_PRIOR_CONFIG, **config.get("network", {})}.items()
                      if k in DEFAULT_MRI_PRIOR_CONFIG}
    prior = {"kind": cfg.kind}
    if cfg.kind == "ambient":
        prior.update(acceleration=cfg.acceleration, further_acceleration=cfg.further)
    with staged_model(model_id, KIND, network_config, run / "model.pt", {"training": training},
                      zoo) as (staging, model, card):
        card["prior"] = prior
        card["edm"] = {"sigma_data": SIGMA_DATA, "sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "rho": RHO}
        card["image"] = {"size": cfg.size, "scale": "1 / (99th percentile of the calibration-lines-only image "
                                                    "magnitude), pipelines.train_mri_prior.calibration_scale"}
        if progress:
            progress(f"{model_id}: denoising check on held-out slices")
        card["metrics"] = {"denoising": denoising_metrics(model, prior, cfg.size)}
        if progress:
            progress(f"{model_id}: exporting the ONNX engine")
        engine = export_mri_prior_onnx(model, model_dir(model_id, staging) / ONNX_FILE)
        require_parity(ONNX_FILE, engine["parity_psnr_db_vs_torch"], MIN_PARITY_DB)
        card["engines"] = {ONNX_FILE: engine}
        save_card(card, staging)
    return model_dir(model_id, zoo) / "card.json"
