"""What the learned MRI methods share: zoo model, engine choice (torch module or ONNX Runtime session)
and the slice loop of ``pipelines.learned``. Models and engines are cached per process."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from pipelines.confidence import consistency_report
from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.learned import DataConsistency
from pipelines.reconstructors import SERVICE, LearnedModel, Method, MethodParams, Progress, in_stages
from pipelines.sampling import acquisition_mask

Provider = Literal["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
DEFAULT_PROVIDERS: tuple[str, ...] = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _a(kind: str) -> str:
    """``a rim``, ``an mri-prior``: the article as the kind is spoken (MRI by its letters)."""
    return f"an {kind}" if kind[0] in "aeio" or kind.startswith("mri") else f"a {kind}"


class ZooModelParams(MethodParams):
    """What every method that runs a zoo network takes: which model, and which engine runs it."""

    model_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                                 description="zoo model (null: the method's shipped default)",
                                 json_schema_extra={"allowed": "a model id of the method's kind from `recon zoo list`"})
    engine: Literal["torch", "onnx"] = Field("torch", description="torch module or ONNX Runtime session",
                                             json_schema_extra=SERVICE)
    providers: list[Provider] | None = Field(None, min_length=1, max_length=3,
                                             description="ONNX Runtime providers in order of preference (null: "
                                                         "TensorRT > CUDA > CPU, whichever is available)",
                                             json_schema_extra=SERVICE)
    kind: ClassVar[str] = ""  # the network kind of the method's models

    @field_validator("model_id")
    @classmethod
    def _shipped(cls, model_id: str | None) -> str | None:
        """A model that is in the zoo and of the method's kind, so a wrong id is refused at submission."""
        from pipelines.zoo import load_card

        if model_id is not None:
            card = load_card(model_id)  # ModelError (a ValueError) for an unknown id
            if cls.kind and card["kind"] != cls.kind:
                raise ValueError(f"model {model_id!r} is {_a(card['kind'])}, not {_a(cls.kind)}")
        return model_id


# the consistency step's threshold (pipelines.learned.DataConsistency: a k-space band is corrected where the network's
# error power there exceeds the data's noise power this many times): 1 is where the MAP weight crosses 1, the largest
# that returns fully sampled inputs within their noise level; its cost and gain on the validation split are in
# benchmarks/results/mri_consistency_tune.json
CONSISTENCY_THRESHOLD = 1.0


class LearnedParams(ZooModelParams):
    fft: Literal["matmul", "dft-op"] = Field("matmul", description="FFT variant of the ONNX engine",
                                             json_schema_extra=SERVICE)
    consistency: Literal["noise-weighted", "exact", "off"] = Field(
        "noise-weighted", description="data consistency after the network: CG-SENSE iterations from its image "
                                      "weighted by the measured noise, the exact projection onto the data, or none")
    consistency_threshold: float = Field(
        CONSISTENCY_THRESHOLD, ge=0, le=1000, description="noise-weighted: a k-space band is corrected where the "
                                                          "network's residual power exceeds the best fit's by more "
                                                          "than this many times the noise power")
    consistency_iterations: int = Field(10, ge=1, le=200, description="CG iterations of the consistency step")
    default_model: ClassVar[str] = ""

    @field_validator("fft")
    @classmethod
    def _shipped_engine(cls, fft: str, info: ValidationInfo) -> str:
        """With ``engine=onnx``, an FFT variant the model ships an ONNX engine for (its card lists them)."""
        from pipelines.zoo import load_card

        model_id = info.data.get("model_id") or cls.default_model
        if info.data.get("engine") == "onnx" and model_id:
            shipped = sorted(e["fft"] for e in (load_card(model_id).get("engines") or {}).values())
            if fft not in shipped:
                raise ValueError(f"model {model_id!r} ships no {fft} ONNX engine (it ships: "
                                 f"{', '.join(shipped) or 'none'})")
        return fft


_MODEL_CACHE: dict[str, tuple[torch.nn.Module, dict[str, Any]]] = {}
_ENGINE_CACHE: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _cached_model(model_id: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from pipelines.zoo import load_model

    if model_id not in _MODEL_CACHE:
        _MODEL_CACHE[model_id] = load_model(model_id)
    return _MODEL_CACHE[model_id]


def _engine(model: torch.nn.Module, model_id: str, card: dict[str, Any], params: LearnedParams) -> tuple[Any, str]:
    """The torch module, or an ONNX Runtime session of its exported graph (``engine=onnx``)."""
    if params.engine == "torch":
        return model, "torch-cpu"
    from pipelines.engines import OnnxEngine, verified_onnx_path

    providers = tuple(params.providers or DEFAULT_PROVIDERS)
    key = (model_id, params.fft, providers)
    if key not in _ENGINE_CACHE:
        _ENGINE_CACHE[key] = OnnxEngine(verified_onnx_path(model_id, params.fft, card), providers)
    engine = _ENGINE_CACHE[key]
    return engine, f"onnxruntime:{engine.provider}"


def _consistency_step(acq: MRIAcquisition, mask: np.ndarray, params: LearnedParams) -> DataConsistency:
    """The method's ``DataConsistency`` with the acquisition's noise level (``off``: it only measures)."""
    from pipelines.methods._mri import acquisition_noise

    noise = acquisition_noise(acq, mask)
    return DataConsistency(noise["sigma"], params.consistency, params.consistency_threshold,
                           params.consistency_iterations, noise_source=noise["source"])


def learned(name: str, summary: str, model: LearnedModel) -> Method:
    """The declaration of a learned method running ``model.kind`` networks from the zoo."""

    def run(acq: MRIAcquisition, params: LearnedParams, progress: Progress | None = None) -> ImageVolume:
        from pipelines.learned import reconstruct_acquisition

        model_id = params.model_id or model.default_model
        network, card = _cached_model(model_id)
        if card["kind"] != model.kind:
            raise ValueError(f"model {model_id!r} is a {card['kind']}, not a {model.kind}")
        engine, provider = _engine(network, model_id, card, params)
        mask, num_low = acquisition_mask(acq)
        step = _consistency_step(acq, mask, params)
        through_network, baseline = in_stages(progress, [acq.num_slices, acq.num_slices])
        data = reconstruct_acquisition(engine, acq, mask, num_low, through_network, step)
        attrs = {"model_id": model_id, "weights_sha256": card["sha256"], "engine": provider,
                 "params": params.model_dump()}
        attrs["consistency_report"] = consistency_report(acq, data, step.report(), card, progress=baseline)
        return ImageVolume(data, acq.affine, attrs)

    params = type(f"{model.kind.capitalize()}Params", (LearnedParams,),
                  {"kind": model.kind, "default_model": model.default_model})
    # steps: each slice through the network, then each slice of the consistency report's baseline
    return Method(name, "mri", summary, params, run, learned=model, progress_unit="step")
