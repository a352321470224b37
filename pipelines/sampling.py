"""The sampling pattern of an MRI acquisition: its mask and number of calibration (ACS) lines."""

from __future__ import annotations

import numpy as np

from models.physics.mri.masks import count_center_lines, mask_from_kspace
from pipelines.data import MRIAcquisition


def acquisition_mask(acq: MRIAcquisition) -> tuple[np.ndarray, int]:
    """The sampling mask (broadcastable to (H, W)) and the number of calibration lines.

    Without a stored mask both come from the k-space itself (columns that are all zero were not sampled).
    """
    if acq.mask is None:
        info = mask_from_kspace(acq.kspace)
        return info.mask, info.num_low_frequencies
    num_low = acq.num_low_frequencies
    if num_low is None:
        num_low = count_center_lines(acq.mask.max(axis=0) if acq.mask.shape[0] > 1 else acq.mask[0])
    return acq.mask.astype(np.float32), int(num_low)


def sampled_acceleration(mask: np.ndarray, shape: tuple[int, int]) -> float:
    """The acceleration the mask achieves: grid points over sampled points (a random mask's nominal 4x may be 5x)."""
    sampled = np.broadcast_to(np.asarray(mask) != 0, shape)
    return float(sampled.size / max(int(sampled.sum()), 1))
