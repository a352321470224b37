"""MRI reconstructors in the registry: zero-filled, CG-SENSE, L1-wavelet.

Each runs slice chunks through a ``models.classical`` function and returns the complex volume
cropped to the acquisition's recon matrix, with the affine of the source.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from models.physics.mri.masks import count_center_lines, mask_from_kspace
from models.physics.mri.sensitivity import estimate_maps
from models.physics.shapes import center_crop
from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.reconstructors import Progress, Reconstructor, register

SliceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, Any]], torch.Tensor]


def acquisition_mask(acq: MRIAcquisition) -> tuple[np.ndarray, int]:
    """The sampling mask (broadcastable to (H, W)) and the number of calibration lines."""
    if acq.mask is None:
        info = mask_from_kspace(acq.kspace)
        return info.mask, info.num_low_frequencies
    num_low = acq.num_low_frequencies
    if num_low is None:
        num_low = count_center_lines(acq.mask.max(axis=0) if acq.mask.shape[0] > 1 else acq.mask[0])
    return acq.mask.astype(np.float32), int(num_low)


def _maps_for(kspace: np.ndarray, num_low: int, method: str) -> np.ndarray:
    return np.stack([estimate_maps(k, num_low, method) for k in kspace])


def run_slices(acq: MRIAcquisition, params: dict[str, Any], progress: Progress | None, fn: SliceFn,
               needs_maps: bool, chunk: int = 4) -> ImageVolume:
    """Reconstruct ``acq`` in chunks of slices with ``fn(kspace, mask, maps, params)``."""
    mask, num_low = acquisition_mask(acq)
    mask_t = torch.from_numpy(mask)
    out = []
    total = acq.num_slices
    for first in range(0, total, chunk):
        k = acq.kspace[first:first + chunk]
        maps = torch.from_numpy(_maps_for(k, num_low, params.get("maps", "acs"))) if needs_maps else None
        image = fn(torch.from_numpy(np.ascontiguousarray(k)), mask_t, maps, params)
        out.append(center_crop(image, acq.image_shape).numpy())
        if progress:
            progress(min(first + chunk, total), total)
    return ImageVolume(np.concatenate(out).astype(np.complex64), acq.affine, {"params": params})


def _zero_filled(kspace, mask, maps, params):
    from models.classical.mri import zero_filled

    return zero_filled(kspace, mask, maps)


def _cg_sense(kspace, mask, maps, params):
    from models.classical.mri import cg_sense

    kwargs = {k: params[k] for k in ("lam", "max_iter", "tol") if k in params}
    return cg_sense(kspace, mask, maps, **kwargs)


def _l1_wavelet(kspace, mask, maps, params):
    from models.classical.l1_wavelet import l1_wavelet

    kwargs = {k: v for k, v in params.items() if k != "maps"}
    return l1_wavelet(kspace, mask, maps, **kwargs)


def _method(name: str, fn: SliceFn, needs_maps: bool, description: str,
            defaults: dict[str, Any] | None = None) -> Reconstructor:
    defaults = dict(defaults or {})

    def run(acq: MRIAcquisition, params: dict[str, Any], progress: Progress | None = None) -> ImageVolume:
        merged = {**defaults, **(params or {})}
        return run_slices(acq, merged, progress, fn, needs_maps)

    return register(Reconstructor("mri", name, run, description, defaults))


def _learned_method(kind: str, description: str) -> Reconstructor:
    """A network from the model zoo; ``model_id`` picks one other than the shipped default."""

    def run(acq: MRIAcquisition, params: dict[str, Any], progress: Progress | None = None) -> ImageVolume:
        from pipelines.learned import reconstruct_acquisition
        from pipelines.zoo import DEFAULT_MODELS

        model_id = params.get("model_id") or DEFAULT_MODELS[kind]
        model, card = _cached_model(model_id)
        if card["kind"] != kind:
            raise ValueError(f"model {model_id!r} is a {card['kind']}, not a {kind}")
        engine, provider = _engine(model, model_id, card, params)
        mask, num_low = acquisition_mask(acq)
        data = reconstruct_acquisition(engine, acq, mask, num_low, progress)
        return ImageVolume(data, acq.affine, {"model_id": model_id, "weights_sha256": card["sha256"],
                                              "engine": provider, "params": params})

    # every parameter the method reads, so callers (the service) can refuse unknown ones
    defaults = {"model_id": None, "engine": "torch", "fft": "matmul", "providers": None}
    return register(Reconstructor("mri", kind, run, description, defaults))


_MODEL_CACHE: dict[str, tuple[torch.nn.Module, dict[str, Any]]] = {}
_ENGINE_CACHE: dict[tuple[str, str, tuple[str, ...]], Any] = {}
ENGINES = ("torch", "onnx")


def _engine(model: torch.nn.Module, model_id: str, card: dict[str, Any], params: dict[str, Any]) -> tuple[Any, str]:
    """The torch module, or an ONNX Runtime session of its exported graph (``engine=onnx``)."""
    kind = params.get("engine", "torch")
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINES)}")
    if kind == "torch":
        return model, "torch-cpu"
    from pipelines.engines import OnnxEngine, verified_onnx_path

    fft = params.get("fft", "matmul")
    providers = tuple(params.get("providers") or ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider"))
    key = (model_id, fft, providers)
    if key not in _ENGINE_CACHE:
        _ENGINE_CACHE[key] = OnnxEngine(verified_onnx_path(model_id, fft, card), providers)
    engine = _ENGINE_CACHE[key]
    return engine, f"onnxruntime:{engine.provider}"


def _cached_model(model_id: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from pipelines.zoo import load_model

    if model_id not in _MODEL_CACHE:
        _MODEL_CACHE[model_id] = load_model(model_id)
    return _MODEL_CACHE[model_id]


_method("zero-filled", _zero_filled, False, "inverse FFT of zero-filled k-space, root-sum-of-squares coil combination")


def _keyword_defaults(fn: Callable[..., Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The solver's own defaults for ``names``: listed in the registry so every accepted key is known."""
    params = inspect.signature(fn).parameters
    return {name: params[name].default for name in names}


def _classical_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    from models.classical.l1_wavelet import DEFAULTS as L1_DEFAULTS
    from models.classical.mri import cg_sense

    # ESPIRiT maps gave about 2 dB more than ACS maps for both on the simulated brain test set
    return ({"maps": "espirit", **_keyword_defaults(cg_sense, ("lam", "max_iter", "tol"))},
            {"maps": "espirit", **L1_DEFAULTS})


_CG_SENSE_DEFAULTS, _L1_DEFAULTS = _classical_defaults()
_method("cg-sense", _cg_sense, True, "CG-SENSE with Tikhonov regularisation", _CG_SENSE_DEFAULTS)
_method("l1-wavelet", _l1_wavelet, True, "compressed sensing: SENSE with an L1 penalty on Daubechies wavelets",
        _L1_DEFAULTS)
_learned_method("recurrentvarnet", "RecurrentVarNet (Yiasemis et al. 2022), shipped weights from the model zoo")
_learned_method("rim", "Recurrent Inference Machine (Putzky & Welling), shipped weights from the model zoo")
