"""ONNX Runtime sessions with an execution-provider preference and a check of what is really active.

``onnxruntime.get_available_providers()`` lists the GPU providers whenever onnxruntime-gpu is
installed, even without usable CUDA/TensorRT libraries; ONNX Runtime then silently falls back to the
next provider. So after creating the session we read ``session.get_providers()`` (the providers the
session actually registered, in priority order) and report the first one as the active provider.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

LOG = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

TRT_CACHE_ENV = "ORT_TENSORRT_CACHE_PATH"
TRT_OPTION_KEYS = (
    "device_id",
    "trt_max_workspace_size",
    "trt_fp16_enable",
    "trt_int8_enable",
    "trt_engine_cache_enable",
    "trt_engine_cache_path",
    "trt_timing_cache_enable",
    "trt_timing_cache_path",
    "trt_builder_optimization_level",
    "trt_profile_min_shapes",
    "trt_profile_opt_shapes",
    "trt_profile_max_shapes",
)
"""TensorRT EP options we pass through (others are passed too, with a warning)."""


def _trt_options(options: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in options.items():
        if key not in TRT_OPTION_KEYS:
            LOG.warning("passing unknown TensorRT option %r through to ONNX Runtime", key)
        if isinstance(value, bool):
            value = "True" if value else "False"
        out[key] = str(value)
    cache = out.get("trt_engine_cache_path")
    if cache and out.get("trt_engine_cache_enable", "False") == "True":
        Path(cache).mkdir(parents=True, exist_ok=True)
    return out


def create_session(path: str | os.PathLike,
                   providers_preference: Sequence[str] = DEFAULT_PROVIDERS,
                   trt_options: Mapping[str, Any] | None = None,
                   threads: int | None = None,
                   cuda_options: Mapping[str, Any] | None = None) -> tuple[ort.InferenceSession, str]:
    """Open an ONNX model with the first usable provider of ``providers_preference``.

    Providers not available in this onnxruntime build are skipped; the CPU provider is always
    appended as the final fallback. ``trt_options`` (e.g. ``trt_engine_cache_enable``,
    ``trt_engine_cache_path``, ``trt_fp16_enable``, ``trt_timing_cache_enable``,
    ``trt_profile_{min,opt,max}_shapes``) go to the TensorRT provider, ``cuda_options`` to CUDA;
    ``threads`` sets the intra-op thread count; by default it is torch's (``torch.get_num_threads()``), so a
    worker process given its share of the cores keeps to it in ONNX Runtime too (ONNX Runtime's own default is
    every core, which oversubscribes a machine running several workers).

    Returns ``(session, active_provider)`` where ``active_provider`` is the highest-priority provider
    the session really registered (``session.get_providers()[0]``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    available = set(ort.get_available_providers())
    unknown = [p for p in providers_preference if not p.endswith("ExecutionProvider")]
    if unknown:
        raise ValueError(f"unknown execution provider names {unknown}; expected e.g. {list(DEFAULT_PROVIDERS)}")
    providers: list[str | tuple[str, dict[str, str]]] = []
    for name in providers_preference:
        if name not in available:
            LOG.info("execution provider %s is not available in this onnxruntime build", name)
            continue
        if name == "TensorrtExecutionProvider" and (trt_options or os.environ.get(TRT_CACHE_ENV)):
            # built engines are kept where ONNX Runtime's own variable says (a volume in the images)
            defaults = {"trt_engine_cache_enable": True, "trt_engine_cache_path": os.environ.get(TRT_CACHE_ENV)}
            providers.append((name, _trt_options(trt_options or defaults)))
        elif name == "CUDAExecutionProvider" and cuda_options:
            providers.append((name, {k: str(v) for k, v in cuda_options.items()}))
        else:
            providers.append(name)
    if "CPUExecutionProvider" not in providers_preference:
        providers.append("CPUExecutionProvider")

    if threads is None:
        import torch

        threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    active = session.get_providers()
    requested = [p if isinstance(p, str) else p[0] for p in providers]
    if active[0] != requested[0]:
        LOG.warning("requested %s but ONNX Runtime activated %s (missing libraries or device?)",
                    requested[0], active[0])
    return session, active[0]
