"""Unrolled/recurrent MRI reconstruction networks on real tensors (complex in a trailing axis of 2).

``build_model(kind, config)`` builds one from a JSON-serialisable config (the constructor kwargs), as
stored in model cards and training checkpoints.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from models.unrolled.recurrentvarnet import PAPER_CONFIG, RecurrentInit, RecurrentVarNet, RecurrentVarNetBlock
from models.unrolled.rim import REFERENCE_CONFIG, RIM
from models.unrolled.scaling import kspace_scale, scale_kspace

MODEL_KINDS: dict[str, type[nn.Module]] = {"recurrentvarnet": RecurrentVarNet, "rim": RIM}


def build_model(kind: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build a network by kind (``"recurrentvarnet"`` or ``"rim"``) from constructor kwargs."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    config = dict(config or {})
    try:
        return MODEL_KINDS[kind](**config)
    except TypeError as err:
        raise ValueError(f"invalid config for {kind}: {err}") from err


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MODEL_KINDS",
    "PAPER_CONFIG",
    "REFERENCE_CONFIG",
    "RIM",
    "RecurrentInit",
    "RecurrentVarNet",
    "RecurrentVarNetBlock",
    "build_model",
    "count_parameters",
    "kspace_scale",
    "scale_kspace",
]
