"""Proximal maps ``prox_{t g}(v) = argmin_z g(z) + ||z - v||^2 / (2 t)``, real and complex safe.

* ``soft_threshold(v, t)``: ``g = ||.||_1`` (elementwise; complex: shrink the magnitude, keep the phase),
  ``v max(1 - t / |v|, 0)``.
* ``group_soft_threshold(v, t, dim)``: ``g = sum_r ||v_r||_2`` over groups along ``dim`` (isotropic TV with the
  gradient components stacked on ``dim``), ``v max(1 - t / ||v||_2, 0)`` with ``||v||_2^2 = sum_dim |v|^2``.

Thresholds may be tensors that broadcast against ``v`` (e.g. one per slice).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def soft_threshold(x: Tensor, threshold: float | Tensor) -> Tensor:
    """Prox of ``threshold * ||x||_1`` (complex: shrink the magnitude, keep the phase)."""
    if x.is_complex():
        mag = x.abs()
        return x * torch.clamp(1.0 - threshold / mag.clamp_min(1e-30), min=0.0)
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0.0)


def group_soft_threshold(v: Tensor, threshold: float | Tensor, dim: int = 0) -> Tensor:
    """Prox of ``threshold * sum ||v||_2`` with the 2-norm over ``dim`` (groups = the other positions)."""
    sq = v.real.square() + v.imag.square() if v.is_complex() else v * v
    norm = torch.sqrt(sq.sum(dim, keepdim=True))
    return v * (1 - threshold / norm.clamp_min(1e-12)).clamp_min(0)

