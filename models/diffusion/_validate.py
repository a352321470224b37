"""Parameter checks shared by the samplers: each raises a ValueError naming the parameter and its allowed range."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from models.physics.linop import LinearOperator


def check_count(name: str, value: int, low: int, high: int) -> int:
    """``value`` if it is an integer in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def check_weight(name: str, value: float, positive: bool) -> float:
    """``float(value)`` if it is finite and ``> 0`` (``positive``) or ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    ok = value > 0 if positive else value >= 0
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def check_eta(eta: float | str) -> float | str:
    """A number in ``[0, 1]`` or the string ``"ancestral"``."""
    if eta == "ancestral":
        return eta
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1] or 'ancestral', got {eta!r}")
    return float(eta)


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple of at least two positive integers (``(..., H, W)``)."""
    shape = tuple(shape)
    if len(shape) < 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
        raise ValueError(f"shape must be at least (H, W) of positive integers, got {shape!r}")
    return shape


def check_measurement(A: LinearOperator, y: torch.Tensor, shape: tuple[int, ...],  # noqa: N803 - math name
                      dtype: torch.dtype) -> None:
    """``A`` a ``LinearOperator`` and ``y`` a tensor that ``A``'s output on a volume of ``shape`` broadcasts over."""
    if not isinstance(A, LinearOperator):
        raise ValueError(f"A must be a LinearOperator, got {type(A).__name__}")
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"y must be a torch tensor, got {type(y).__name__}")
    out = A.forward(torch.zeros(shape, dtype=dtype, device=y.device))
    try:
        fits = torch.broadcast_shapes(out.shape, y.shape) == out.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"y has shape {tuple(y.shape)} but A maps the volume {shape} to {tuple(out.shape)}")
