"""The registry of reconstruction methods: ``(modality, name) -> Reconstructor``.

Method modules (``pipelines/mri_methods.py``, ``pipelines/ct_methods.py``) call ``register`` at import.
A reconstructor takes an acquisition, a dict of parameters and an optional progress callback
``progress(done, total)`` and returns an ``ImageVolume`` cropped to the acquisition's image shape.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.data import ImageVolume

Progress = Callable[[int, int], None]

_METHOD_MODULES = ("pipelines.mri_methods", "pipelines.ct_methods")


@dataclass(frozen=True)
class Reconstructor:
    modality: str  # "mri" or "ct"
    name: str
    run: Callable[[Any, dict[str, Any], Progress | None], ImageVolume]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


def check_params(method: str, params: dict[str, Any], allowed: set[str] | dict[str, Any]) -> None:
    """Refuse parameters a method does not know, naming them and the ones it takes."""
    extra = set(params) - set(allowed)
    if extra:
        known = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"{method}: unknown parameter(s) {', '.join(sorted(extra))}; allowed: {known}")


_REGISTRY: dict[tuple[str, str], Reconstructor] = {}
_loaded = False


def register(reconstructor: Reconstructor) -> Reconstructor:
    _REGISTRY[(reconstructor.modality, reconstructor.name)] = reconstructor
    return reconstructor


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in _METHOD_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:
                if err.name != module:  # a real import error inside the module
                    raise
        _loaded = True


def available(modality: str | None = None) -> list[Reconstructor]:
    _load()
    return [r for (m, _), r in sorted(_REGISTRY.items()) if modality in (None, m)]


def get(modality: str, name: str) -> Reconstructor:
    _load()
    try:
        return _REGISTRY[(modality, name)]
    except KeyError:
        names = ", ".join(r.name for r in available(modality)) or "none"
        raise ValueError(f"unknown {modality.upper()} method {name!r}; available: {names}") from None
