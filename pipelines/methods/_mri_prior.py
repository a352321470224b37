"""The MRI diffusion priors (zoo kind ``mri-prior``) as the A-DPS samplers' complex denoiser, and the slice
preparation they were trained with.

Why here and not in the method: the prior is only valid on data prepared as in ``pipelines.train_mri_prior``
(ACS maps from the slice's own calibration lines, k-space scaled so that the 99th percentile of the calibration-only
image is 1), and an ambient prior only ever saw images projected through a further sub-mask ``A~^H A~`` with that
sub-mask as its mask channel. Keeping that in one place keeps any MRI method on these priors consistent with
their training.

Engines: the torch ``EDMPrecond`` (autograd passes through it: exact A-DPS) or its ONNX Runtime session (same
inputs ``x`` (N, 2, H, W), ``sigma`` (N,), ``mask`` (N, 1, H, W); no gradient: the serving path). Both are called
as ``model(x, sigma, mask)`` by ``models.diffusion.edm.edm_denoise``. Loaded engines are cached per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.diffusion.adps import ComplexDenoiser, edm_denoiser
from models.diffusion.edm import column_mask_channel, edm_denoise
from models.physics.linop import Identity
from models.physics.mri.masks import calibrated_center_fraction, count_center_lines, random_column_mask
from models.physics.mri.sense import SenseOperator

PRIOR_KIND = "mri-prior"
PRIOR_KINDS = ("ambient", "fully-sampled")


class OnnxEDM:
    """An exported ``EDMPrecond`` run by ONNX Runtime, called like the torch module: ``model(x, sigma, mask)``
    with float32 tensors, returning ``D`` as a tensor on ``x``'s device. ``provider``: the provider in use."""

    def __init__(self, path: Any, providers: tuple[str, ...]):
        from models.engine.session import create_session

        self.session, self.provider = create_session(path, providers)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        def host(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())

        feed = {"x": host(x), "sigma": host(sigma.reshape(-1)), "mask": host(mask)}
        return torch.from_numpy(self.session.run(None, feed)[0]).to(x.device)


_ENGINES: dict[tuple, tuple[Any, dict[str, Any], str]] = {}


def load_prior(model_id: str, engine: str, providers: tuple[str, ...], device: str
               ) -> tuple[Any, dict[str, Any], str]:
    """``(model, card, engine label)`` for the zoo prior ``model_id``: the torch module on ``device`` (eval mode,
    parameters frozen so that A-DPS's gradient is taken for the image only) or the verified ONNX session."""
    from pipelines.zoo import load_card

    card = load_card(model_id)
    if card["kind"] != PRIOR_KIND:
        raise ValueError(f"model {model_id!r} is a {card['kind']}, not an {PRIOR_KIND}")
    prior_info(card)
    key = (model_id, card["sha256"], engine, providers if engine == "onnx" else device)
    if key not in _ENGINES:
        if engine == "onnx":
            from pipelines.ship_mri_prior import verified_mri_prior_onnx

            session = OnnxEDM(verified_mri_prior_onnx(model_id), providers)
            _ENGINES[key] = (session, card, f"onnxruntime:{session.provider}")
        else:
            from pipelines.zoo import load_model

            network, card = load_model(model_id)
            network = network.to(device).eval().requires_grad_(False)
            _ENGINES[key] = (network, card, f"torch-{device}")
    return _ENGINES[key]


def prior_info(card: dict[str, Any]) -> dict[str, Any]:
    """The card's ``prior`` section, checked: kind, training acceleration and (ambient) further acceleration."""
    prior = card.get("prior") or {}
    if prior.get("kind") not in PRIOR_KINDS:
        raise ValueError(f"model {card['id']!r}: its card's prior kind is {prior.get('kind')!r}, not one of "
                         f"{', '.join(PRIOR_KINDS)}")
    if prior["kind"] == "ambient" and not float(prior.get("further_acceleration") or 0) > 1:
        raise ValueError(f"model {card['id']!r}: an ambient prior's card needs its further_acceleration")
    return prior


def size_multiple(card: dict[str, Any]) -> int:
    """Image sides the U-Net takes: a multiple of 2 per downsampling level."""
    return 2 ** (len(card["config"]["channels"]) - 1)


def further_mask(width: int, prior: dict[str, Any], seed: int) -> torch.Tensor:
    """The fixed sampling-time sub-mask ``M~`` (``(1, W)`` float32) of an ambient prior, of its training kind: a
    random column mask at the training acceleration, then ``further_masks`` down to the further acceleration."""
    from pipelines.train_mri_prior import further_masks

    acceleration = float(prior["acceleration"])
    base = random_column_mask(width, acceleration, calibrated_center_fraction(width, acceleration), seed).mask
    base_t = torch.from_numpy(np.asarray(base, np.float32).reshape(1, width))
    num_low = torch.tensor([count_center_lines(base)])
    return further_masks(base_t, num_low, float(prior["further_acceleration"]),
                         torch.Generator().manual_seed(seed))


def prior_denoiser(model: Any, prior: dict[str, Any], maps: torch.Tensor, sub_mask: torch.Tensor | None
                   ) -> ComplexDenoiser:
    """The A-DPS denoiser: an ambient prior sees ``A~^H A~ x`` (the slices' maps, sub-mask ``M~``) with ``M~`` as
    the mask channel; a fully sampled prior sees ``x`` with an all-ones mask channel.

    ``maps`` ``(C, H, W)`` for one slice, or ``(Z, C, H, W)`` for a volume: the samplers then hand the denoiser
    ``(N, H, W)`` batches of whole volumes (N a multiple of Z, slices in order), which are projected volume by volume.
    """
    if prior["kind"] != "ambient":
        return edm_denoiser(model)
    if sub_mask is None:
        raise ValueError("an ambient prior needs its further sub-mask")
    h, w = maps.shape[-2:]
    sub = sub_mask.to(maps.device)
    project = SenseOperator(maps, sub.reshape(1, 1, 1, w))
    channel = column_mask_channel(sub, (h, w))
    if maps.ndim == 3:
        return edm_denoiser(model, A_further=project, further_mask=channel)
    slices = maps.shape[0]

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        projected = project.normal(x.reshape(-1, slices, h, w)).reshape(x.shape)
        return edm_denoise(model, projected, sigma, A_further=Identity(), further_mask=channel)

    return denoise


@dataclass(frozen=True)
class PreparedSlice:
    """One slice as the prior was trained on it: ``y = scale * k`` (masked), its ACS ``maps``, the ``scale``."""

    y: torch.Tensor         # (C, H, W) complex64
    maps: torch.Tensor      # (C, H, W) complex64, sum_c |S_c|^2 = 1 inside the object
    scale: float


def prepare_slice(kspace: np.ndarray, mask: np.ndarray, num_low: int, device: str) -> PreparedSlice:
    """ACS maps from the slice's own ``num_low`` calibration columns and the calibration scale
    (``pipelines.train_mri_prior.calibrate``), as in training."""
    from pipelines.train_mri_prior import calibrate

    k = (np.asarray(kspace, np.complex64) * np.asarray(mask, np.float32)).astype(np.complex64)
    maps, scale = calibrate(k, num_low)
    return PreparedSlice(torch.from_numpy(k * scale).to(device), torch.from_numpy(maps).to(device), float(scale))
