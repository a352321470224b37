"""In-memory containers passed between readers, reconstructors and writers.

Conventions (see DESIGN.md): k-space is centered, ``(slices, coils, H, W)`` complex64, with H the
readout (frequency-encoding, kx) axis and W the phase-encoding (ky) axis, as fastMRI stores it; column
masks run along W. Masks are broadcastable to ``(H, W)``, float32, 1 = sampled; image volumes are
``(z, y, x)`` with a 4x4 affine in mm (NIfTI/RAS); sinograms are ``(slices, views, detectors)``
float32, angles in radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class InputError(ValueError):
    """Input a user gave that cannot be used; the message names the source and the problem."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = str(source), problem
        super().__init__(f"{source}: {problem}")


@dataclass
class MRIAcquisition:
    """A multi-coil Cartesian MRI acquisition, one or more slices."""

    kspace: np.ndarray                      # (slices, coils, H, W) complex64, centered
    mask: np.ndarray | None = None          # (1, W) or (H, W) float32; None: derive from zero columns
    num_low_frequencies: int | None = None  # fully sampled centre lines (for calibration)
    recon_shape: tuple[int, int] | None = None  # image crop (h, w) after reconstruction; None = full
    reference: np.ndarray | None = None     # (slices, h, w) float32 magnitude ground truth
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))  # of the (z, y, x) image volume
    header_xml: str | None = None           # ISMRMRD XML header, if the source had one
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def num_slices(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def num_coils(self) -> int:
        return int(self.kspace.shape[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        """The recon matrix, never larger than the k-space grid (some fastMRI FLAIR headers say so)."""
        h, w = int(self.kspace.shape[-2]), int(self.kspace.shape[-1])
        if self.recon_shape is None:
            return h, w
        return min(self.recon_shape[0], h), min(self.recon_shape[1], w)


@dataclass
class CTAcquisition:
    """A sparse-view CT acquisition: one sinogram per axial slice."""

    sinogram: np.ndarray                    # (slices, views, detectors) float32
    angles: np.ndarray                      # (views,) radians
    geometry: dict[str, Any] = field(default_factory=dict)
    reference: np.ndarray | None = None     # (slices, y, x) float32 volume
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"


@dataclass
class ImageVolume:
    """A reconstructed volume and what made it."""

    data: np.ndarray                        # (z, y, x); complex64 or float32
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    attrs: dict[str, Any] = field(default_factory=dict)
    uncertainty: np.ndarray | None = None   # (z, y, x) float32: the std over a sampler's draws, data's units

    def magnitude(self) -> np.ndarray:
        return np.abs(self.data).astype(np.float32)
