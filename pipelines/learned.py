"""Running the unrolled networks on acquisitions: inputs, scaling, slice loop.

A network sees one slice at a time: masked k-space (1, C, H, W, 2) divided by its 99th-percentile
magnitude, the mask, and ACS sensitivity maps; its complex output is multiplied back by the scale, optionally
made consistent with the measured k-space (``DataConsistency``) and cropped to the recon matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.classical.mri import band_power, data_consistency
from models.physics.mri.sense import SenseOperator
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


def network_images(model: Network, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Scaled forward pass of a torch module or an engine with the same call signature; complex images
    (N, H, W, 2) over the whole k-space field of view, in the input's units (a list: RIM's iterates in
    training mode)."""
    scale = kspace_scale(inputs["masked_kspace"]).reshape(-1, 1, 1, 1, 1)
    out = model(inputs["masked_kspace"] / scale, inputs["mask"], inputs["sens_maps"])
    outs = out if isinstance(out, list) else [out]
    return [o * scale[:, 0] for o in outs]


def crop_image(image: torch.Tensor, recon_shape: tuple[int, int]) -> torch.Tensor:
    """(N, H, W, 2) complex images cropped to the recon matrix (N, h, w, 2)."""
    return center_crop(image.movedim(-1, 1), recon_shape).movedim(1, -1)


def network_outputs(model: Network, inputs: dict[str, torch.Tensor],
                    recon_shape: tuple[int, int]) -> list[torch.Tensor]:
    """``network_images`` cropped to the recon matrix: complex images (N, h, w, 2) in the input's units."""
    return [crop_image(o, recon_shape) for o in network_images(model, inputs)]


def object_mask(image: torch.Tensor, fraction: float = 0.08, width: float = 2.0) -> torch.Tensor:
    """Where ``|image|`` (N, H, W), smoothed by a Gaussian of ``width`` pixels, is above ``fraction`` of its 99th
    percentile: the object, without the noise around it."""
    from scipy import ndimage

    smooth = np.stack([ndimage.gaussian_filter(np.abs(i.numpy()), width) for i in image])
    level = np.quantile(smooth.reshape(len(smooth), -1), 0.99, axis=1)[:, None, None]
    return torch.from_numpy(smooth > fraction * level)


@dataclass
class DataConsistency:
    """The data-consistency step after the network (``models.classical.mri.data_consistency``), slice by slice.

    The network image ``x0`` is corrected only where it contradicts its data. Per radial k-space band the network's
    coil residual power on the measured samples is compared with that of the best fit the forward model allows
    (the exact projection, which absorbs the sensitivity maps' own error). The excess ``tau_b^2`` estimates the
    power of the network's image error in that band (maps with ``sum |S|^2 = 1``); where it is above ``threshold``
    times the noise power ``sigma^2`` of the data's own image (``sigma`` measured), the data is the better
    estimate and the band is corrected with the MAP weight ``lam_b = sigma^2 / tau_b^2``; the others keep the
    network's spectrum, and the background around the object keeps the network's image. A network that agrees with
    its data down to the noise is returned unchanged; one that contradicts it (an unfamiliar object or mask, fully
    sampled input) is pulled to the data in the bands where it does. ``mode="exact"`` asks
    for the projection whatever the noise; ``mode="off"`` only measures. Each slice's normalised residual
    ``rho = ||A x - y|| / (sigma sqrt(m))`` (about 1 for an image that explains the data down to its noise, ``m``
    the measured samples) of the network image and of the result, and the fraction of bands corrected, are kept
    in ``slices``.
    """

    sigma: float
    mode: str = "noise-weighted"  # or "exact", "off" (measure only)
    threshold: float = 1.0
    iterations: int = 10
    noise_source: str = ""
    slices: list[dict[str, float]] = field(default_factory=list)

    def apply(self, image: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, H, W, 2) network images (the whole field of view, input units) made consistent with ``inputs``."""
        return torch.cat([self._apply_one(image[n:n + 1], {k: v[n:n + 1] for k, v in inputs.items()})
                          for n in range(image.shape[0])])

    def _apply_one(self, image: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x0 = torch.view_as_complex(image.contiguous())
        kspace = torch.view_as_complex(inputs["masked_kspace"].contiguous())
        maps = torch.view_as_complex(inputs["sens_maps"].contiguous())
        mask = inputs["mask"][..., 0]
        operator = SenseOperator(maps, mask)
        samples = float(torch.broadcast_to(mask, kspace.shape).count_nonzero())
        expected = max(self.sigma, 1e-30) * np.sqrt(samples)
        residual = operator.forward(x0) - kspace
        before = float(torch.linalg.vector_norm(residual)) / expected
        if self.mode == "off":
            self.slices.append({"residual_network": before})
            return image
        projection = data_consistency(x0, kspace, mask, maps, 0.0, self.iterations)
        if self.mode == "exact":
            x, corrected = projection, 1.0
        else:
            best_fit = operator.forward(projection) - kspace
            excess = band_power(residual[0], mask[0]) - band_power(best_fit[0], mask[0])
            noise_power = self.sigma**2  # of the data's coil-combined image, per frequency
            contradicted = excess > self.threshold * noise_power
            kept = torch.full_like(excess, float("inf"))
            lam = torch.where(contradicted, noise_power / excess.clamp_min(1e-30), kept)
            x = data_consistency(x0, kspace, mask, maps, lam, self.iterations)
            # the background stays the network's: there the data holds only noise, which the correction would
            # put back (the object is where the smoothed best fit has signal)
            x = x0 + object_mask(projection) * (x - x0)
            corrected = float(contradicted.float().mean())
        after = float(torch.linalg.vector_norm(operator.forward(x) - kspace)) / expected
        self.slices.append({"corrected": corrected, "residual_network": before, "residual": after})
        return torch.view_as_real(x).to(image.dtype)

    def report(self) -> dict[str, Any]:
        """Median over slices of each recorded figure, the largest network residual, the mode and the noise."""
        if not self.slices:
            return {}
        out: dict[str, Any] = {key: float(np.median([s[key] for s in self.slices])) for key in self.slices[0]}
        out["residual_network_max"] = float(max(s["residual_network"] for s in self.slices))
        out.update(mode=self.mode, noise={"sigma": self.sigma, "source": self.noise_source})
        return out


def magnitude(x: torch.Tensor) -> torch.Tensor:
    """|x| of (..., 2) real-complex tensors, with a floor that keeps the gradient finite at 0."""
    return torch.sqrt((x**2).sum(-1) + 1e-12)


def reconstruct_acquisition(model: Network, acq: MRIAcquisition, mask: np.ndarray, num_low: int,
                            progress: Callable[[int, int], None] | None = None,
                            consistency: DataConsistency | None = None) -> np.ndarray:
    """Complex volume (slices, h, w) from an undersampled acquisition, one slice at a time; with
    ``consistency``, each network image goes through its data-consistency step before the crop."""
    return reconstruct_variants(model, acq, mask, num_low, {"image": consistency}, progress)["image"]


def reconstruct_variants(model: Network, acq: MRIAcquisition, mask: np.ndarray, num_low: int,
                         steps: dict[str, DataConsistency | None],
                         progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """One complex volume (slices, h, w) per entry of ``steps``: each slice goes through the network once, and its
    image through each step (None: as it is) before the crop. Each step's ``report()`` covers the volume."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in steps}
    with torch.no_grad():
        for s in range(acq.num_slices):
            inputs = collate([prepare_input(acq.kspace[s], mask, num_low)])
            image = network_images(model, inputs)[-1]
            for name, step in steps.items():
                x = image if step is None else step.apply(image, inputs)
                out[name].append(torch.view_as_complex(crop_image(x, acq.image_shape)[0].contiguous()).numpy())
            if progress:
                progress(s + 1, acq.num_slices)
    return {name: np.stack(volumes).astype(np.complex64) for name, volumes in out.items()}
