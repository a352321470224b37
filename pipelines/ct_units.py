"""CT value units: Hounsfield units and linear attenuation, one convention for simulation, recon and DICOM.

Reconstructions of sinograms come out in the sinogram's attenuation units (1/mm, ``attrs["units"]``);
``mu = MU_WATER * (1 + HU / 1000)`` with ``MU_WATER = 0.0193 / mm`` (water at about 70 keV), the value the
simulated acquisitions use. DICOM CT images store HU.
"""

from __future__ import annotations

import numpy as np

MU_WATER = 0.0193  # 1/mm


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """Hounsfield units to linear attenuation (1/mm), clipped at 0."""
    return np.clip(mu_water * (1.0 + np.asarray(hu, dtype=np.float32) / 1000.0), 0.0, None).astype(np.float32)


def mu_to_hu(mu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """Linear attenuation (1/mm) to Hounsfield units (float64: HU of small mu differences stay exact)."""
    if not mu_water > 0:
        raise ValueError(f"mu_water must be positive, got {mu_water}")
    return 1000.0 * (np.asarray(mu, dtype=np.float64) / mu_water - 1.0)
