"""What the classical MRI methods share: the sensitivity-map parameter, the chunked slice loop and the weight chosen
from the measured noise level when the user leaves it out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from models.classical.noise_rules import NoiseRule, noise_to_signal
from models.physics.mri.noise import estimate_kspace_sigma
from models.physics.mri.sense import SenseOperator
from models.physics.mri.sensitivity import estimate_maps
from models.physics.shapes import center_crop
from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.reconstructors import MethodParams, Progress
from pipelines.sampling import acquisition_mask, sampled_acceleration

MapMethod = Literal["acs", "espirit", "espirit-sigpy"]
# ESPIRiT maps gave about 2 dB more than ACS maps for CG-SENSE and L1-wavelet on the simulated brain test set
MAPS_FIELD = Field("espirit", description="coil sensitivity estimate from the calibration lines")
MAX_ITERATIONS = 2000


class SenseParams(MethodParams):
    """Parameters of every method that needs coil sensitivity maps."""

    maps: MapMethod = MAPS_FIELD


NOISE_SCAN = "noise scan"
NOISE_FROM_KSPACE = "k-space regions without signal (corners, readout FOV edges)"


def lam_field(limit: float, what: str) -> Any:
    return Field(None, ge=0, le=limit, description=f"{what} (null: chosen from the measured noise level and the "
                                                   "acceleration, reported as 'chosen')")


def acquisition_noise(acq: MRIAcquisition, mask: np.ndarray) -> dict[str, Any]:
    """The k-space noise level ``sigma``: from the file's noise scan when it had one, else from the data."""
    scanned = acq.attrs.get("noise_scan_sigma")
    if scanned is not None and float(scanned) > 0:
        return {"sigma": float(scanned), "source": NOISE_SCAN}
    return {"sigma": estimate_kspace_sigma(acq.kspace, mask), "source": NOISE_FROM_KSPACE}


class _AdaptiveWeight:
    """Chooses ``lam`` per chunk of slices by ``rule`` from ``r = sigma / s``, the acceleration and the recon matrix
    (``models.classical.noise_rules``)."""

    def __init__(self, acq: MRIAcquisition, mask: np.ndarray, rule: NoiseRule, params: MethodParams):
        self.noise = acquisition_noise(acq, mask)
        self.acceleration = sampled_acceleration(mask, acq.kspace.shape[-2:])
        self.matrix = float(np.sqrt(np.prod(acq.image_shape)))
        self.rule = rule
        self.quantile = float(getattr(params, "scale_quantile", 0.99))
        self.chosen: list[tuple[float, float]] = []

    def params_for(self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor, params: MethodParams):
        aty = SenseOperator(maps, mask).adjoint(kspace)
        ratio = noise_to_signal(self.noise["sigma"], aty, self.quantile)
        lam = self.rule.lam(ratio, self.acceleration, self.matrix)
        self.chosen.append((lam, ratio))
        return params.model_copy(update={"lam": lam})

    def report(self) -> dict[str, Any]:
        lams = [lam for lam, _ in self.chosen]
        ratios = [ratio for _, ratio in self.chosen]
        out = {"lam": float(np.median(lams)), "noise": {**self.noise}, "noise_to_signal": float(np.median(ratios)),
               "acceleration": self.acceleration, "matrix": self.matrix, "rule": self.rule.formula()}
        if len(lams) > 1:
            out["lam_range"] = [float(min(lams)), float(max(lams))]
        return out


SliceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, Any], torch.Tensor]


def _maps_for(kspace: np.ndarray, num_low: int, method: str) -> np.ndarray:
    return np.stack([estimate_maps(k, num_low, method) for k in kspace])


def run_slices(acq: MRIAcquisition, params: MethodParams, progress: Progress | None, fn: SliceFn,
               chunk: int = 4, rule: NoiseRule | None = None) -> ImageVolume:
    """Reconstruct ``acq`` in chunks of slices with ``fn(kspace, mask, maps, params)``; maps are estimated
    per chunk when ``params`` has a ``maps`` choice. With a ``rule`` and ``params.lam`` left out, each chunk's
    ``lam`` is chosen from the noise level (reported in the volume's attrs as ``chosen``)."""
    mask, num_low = acquisition_mask(acq)
    mask_t = torch.from_numpy(mask)
    maps_method = getattr(params, "maps", None)
    adaptive = None
    if rule is not None and getattr(params, "lam", 0.0) is None:
        adaptive = _AdaptiveWeight(acq, mask, rule, params)
    out = []
    total = acq.num_slices
    for first in range(0, total, chunk):
        k = acq.kspace[first:first + chunk]
        maps = torch.from_numpy(_maps_for(k, num_low, maps_method)) if maps_method else None
        k = torch.from_numpy(np.ascontiguousarray(k))
        chunk_params = params if adaptive is None else adaptive.params_for(k, mask_t, maps, params)
        image = fn(k, mask_t, maps, chunk_params)
        out.append(center_crop(image, acq.image_shape).numpy())
        if progress:
            progress(min(first + chunk, total), total)
    attrs: dict[str, Any] = {"params": params.model_dump()}
    if adaptive is not None:
        attrs["chosen"] = adaptive.report()
    return ImageVolume(np.concatenate(out).astype(np.complex64), acq.affine, attrs)
