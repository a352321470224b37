"""Regularisation weights chosen from the measured noise level: the default rules of the classical MRI methods.

Each weight is relative to the image's bright-tissue intensity ``s`` (the 99 % quantile of ``|A^H y|``), so what
sets it is the noise-to-signal ratio ``r = sigma / s`` (``sigma`` from ``models.physics.mri.noise``), the
acceleration ``R`` and the matrix size ``n = sqrt(H W)`` (at a finer grid the same anatomy is smoother from pixel to
pixel, so it takes a larger weight). A rule is a power law whose exponent of ``r`` may change with ``R`` (at low
acceleration noise sets the weight, at high acceleration aliasing does, whatever the noise):

    log lam = c0 + c1 log r + c2 log R + c3 log(n / 256) + c4 log r log R,   clipped to [low, high]

with ``r``, ``R`` and ``n`` first held inside the ranges the rule was fitted on (``R_RATIO_RANGE``, ``R_RANGE``,
``MATRIX_RANGE``): outside
them a fitted polynomial in logs is an extrapolation, so noise-free data takes the weight of the least noisy
tuning cases (it still needs one against aliasing) rather than a vanishing one.

L1-wavelet also takes its iteration count from the noise level (``ITERATION_RULES``): the proximal-gradient
iterations stop short of convergence, and where the noise is high fewer iterations fit less of it (early stopping
regularises beside the weight), while clean, highly accelerated data gain from more. The count is a power law in
``r`` and ``R``, rounded (in log) to the nearest of the counts it was tuned on:

    log n = d0 + d1 log r + d2 log R,   n in ITERATION_CHOICES

fitted jointly with the weight: each tuning case's best (count, weight) pair, the count rule fitted on the best
counts, then the weight rule on each case's best weight at the count the count rule gives it.

Both are fitted by least squares in logs (``benchmarks/mri_tune_defaults.py`` on
``benchmarks/mri_cases.TUNING`` - never the held-out cases - written to ``benchmarks/results/mri_default_rule.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.classical.l1_wavelet import DEFAULTS as L1_DEFAULTS
from models.classical.l1_wavelet import data_scale

# the tuning cases span r = 0.0072 .. 0.088 (SNR 40 .. 20 dB) and sampled R = 3.4 .. 11.6 (nominal 4x and 8x)
R_RATIO_RANGE = (0.007, 0.09)
R_RANGE = (3.3, 12.0)
MATRIX_RANGE = (128.0, 256.0)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


@dataclass(frozen=True)
class NoiseRule:
    c0: float
    c1: float
    c2: float
    c3: float
    c4: float
    low: float
    high: float

    def lam(self, noise_to_signal_ratio: float, acceleration: float, matrix: float) -> float:
        log_r = math.log(_clamp(float(noise_to_signal_ratio), R_RATIO_RANGE))
        log_acc = math.log(_clamp(float(acceleration), R_RANGE))
        log_n = math.log(_clamp(float(matrix), MATRIX_RANGE) / 256)
        value = math.exp(self.c0 + self.c1 * log_r + self.c2 * log_acc + self.c3 * log_n + self.c4 * log_r * log_acc)
        return float(min(max(value, self.low), self.high))

    def formula(self) -> str:
        return (f"log lam = {self.c0:.4g} + {self.c1:.4g} log(sigma/s) + {self.c2:.4g} log R + {self.c3:.4g} log(n/256)"
                f" + {self.c4:.4g} log(sigma/s) log R (sigma/s in [{R_RATIO_RANGE[0]:g}, {R_RATIO_RANGE[1]:g}], "
                f"R in [{R_RANGE[0]:g}, {R_RANGE[1]:g}], n in [{MATRIX_RANGE[0]:g}, {MATRIX_RANGE[1]:g}]), "
                f"clipped to [{self.low:g}, {self.high:g}]")


@dataclass(frozen=True)
class IterationRule:
    d0: float
    d1: float
    d2: float
    choices: tuple[int, ...]

    def iterations(self, noise_to_signal_ratio: float, acceleration: float) -> int:
        log_r = math.log(_clamp(float(noise_to_signal_ratio), R_RATIO_RANGE))
        log_acc = math.log(_clamp(float(acceleration), R_RANGE))
        log_n = self.d0 + self.d1 * log_r + self.d2 * log_acc
        return min(self.choices, key=lambda n: abs(math.log(n) - log_n))

    def formula(self) -> str:
        return (f"log n = {self.d0:.4g} + {self.d1:.4g} log(sigma/s) + {self.d2:.4g} log R, rounded to the nearest of "
                f"{', '.join(str(n) for n in self.choices)}")


# fitted by benchmarks/mri_tune_defaults.py (benchmarks/results/mri_default_rule.json, the 48 tuning cases)
RULES = {
    # 48 cases, jointly with ITERATION_RULES (at the count it chooses); rms log residual 0.20; PSNR lost against each
    # case's best (count, weight) pair: mean 0.12 dB, max 0.44 dB; mean 28.21 dB against 28.02 for the previous rule at
    # 60 iterations
    "l1-wavelet": NoiseRule(c0=3.5007, c1=2.0935, c2=-2.4450, c3=0.4756, c4=-0.4549, low=1e-5, high=1.0),
    # 48 cases at 50 CG iterations; rms log residual 0.28; PSNR lost: mean 0.07 dB, max 0.49 dB
    "cg-sense": NoiseRule(c0=3.3302, c1=1.6448, c2=-1.2304, c3=0.5488, c4=-0.0609, low=1e-6, high=10.0),
    # admm-tv-2d on the balanced half of the cases (24, --half); rms log residual 0.33; PSNR lost: mean 0.13 dB,
    # max 0.65 dB. admm-tv (3D) uses it too, lam_z = lam
    "admm-tv": NoiseRule(c0=6.0765, c1=2.9112, c2=-4.0575, c3=0.5685, c4=-0.9928, low=1e-5, high=1.0),
}

# fitted jointly with RULES["l1-wavelet"] by benchmarks/mri_tune_defaults.py --methods l1-wavelet
ITERATION_RULES = {
    # chooses 30 / 45 / 60 / 80 iterations on 9 / 15 / 16 / 8 of the 48 tuning cases
    "l1-wavelet": IterationRule(d0=1.8364, d1=-0.3415, d2=0.4483, choices=(30, 45, 60, 80)),
}


def noise_to_signal(sigma: float, aty: torch.Tensor, quantile: float = L1_DEFAULTS["scale_quantile"],
                    image_dims: int = 2) -> float:
    """``sigma / s`` with ``s`` the median over slices of the ``quantile`` of ``|A^H y|`` (``aty``)."""
    scale = data_scale(aty, quantile, image_dims)
    return float(sigma / float(scale.flatten().median()))
