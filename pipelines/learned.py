"""Running the unrolled networks on acquisitions: inputs, scaling, slice loop.

A network sees one slice at a time: masked k-space (1, C, H, W, 2) divided by its 99th-percentile
magnitude, the mask, and ACS sensitivity maps; its complex output is multiplied back by the scale and
cropped to the recon matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models.physics.mri.sensitivity import acs_maps
from models.physics.shapes import center_crop
from models.unrolled.scaling import kspace_scale
from pipelines.data import MRIAcquisition


def _to_real(x: np.ndarray) -> torch.Tensor:
    return torch.view_as_real(torch.from_numpy(np.ascontiguousarray(x, dtype=np.complex64)))


def prepare_input(kspace: np.ndarray, mask: np.ndarray, num_low: int) -> dict[str, torch.Tensor]:
    """Network inputs for one slice: masked k-space (C, H, W, 2), mask (1, 1 or H, W, 1), ACS maps (C, H, W, 2)."""
    masked = (kspace * mask).astype(np.complex64)
    maps = acs_maps(masked, num_low)
    return {"masked_kspace": _to_real(masked), "mask": torch.from_numpy(mask[None, :, :, None].astype(np.float32)),
            "sens_maps": _to_real(maps)}


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | list[torch.Tensor]"]


def network_outputs(model: Network, inputs: dict[str, torch.Tensor],
                    recon_shape: tuple[int, int]) -> list[torch.Tensor]:
    """Scaled forward pass of a torch module or an engine with the same call signature; complex images
    (N, h, w, 2) in the input's units (a list: RIM's iterates in training mode)."""
    scale = kspace_scale(inputs["masked_kspace"]).reshape(-1, 1, 1, 1, 1)
    out = model(inputs["masked_kspace"] / scale, inputs["mask"], inputs["sens_maps"])
    outs = out if isinstance(out, list) else [out]
    return [center_crop(o.movedim(-1, 1), recon_shape).movedim(1, -1) * scale[:, 0] for o in outs]


def magnitude(x: torch.Tensor) -> torch.Tensor:
    """|x| of (..., 2) real-complex tensors, with a floor that keeps the gradient finite at 0."""
    return torch.sqrt((x**2).sum(-1) + 1e-12)


def reconstruct_acquisition(model: Network, acq: MRIAcquisition, mask: np.ndarray, num_low: int,
                            progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Complex volume (slices, h, w) from an undersampled acquisition, one slice at a time."""
    out = []
    with torch.no_grad():
        for s in range(acq.num_slices):
            inputs = collate([prepare_input(acq.kspace[s], mask, num_low)])
            image = network_outputs(model, inputs, acq.image_shape)[-1][0]
            out.append(torch.view_as_complex(image.contiguous()).numpy())
            if progress:
                progress(s + 1, acq.num_slices)
    return np.stack(out).astype(np.complex64)
