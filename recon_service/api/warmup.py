"""Warm-up before /readyz says ready: the shipped default models load (checksums verified) and run once.

A minimal version for the API process; the job workers' ``recon_service.jobs.worker.warm_up`` replaces it
when the branches are merged (the lead reconciles the two).
"""

from __future__ import annotations

import logging
from typing import Any

from recon_service.settings import Settings

LOG = logging.getLogger(__name__)


def warm_up(settings: Settings) -> dict[str, Any]:
    """Load every default zoo model's ONNX engine with the configured provider preference, run it once on a
    tiny input, and report ``{"provider": active provider, "models": [model ids]}``.

    Raises (ModelError, FileNotFoundError, onnxruntime errors) when a shipped model cannot be used: the
    service must not report ready then."""
    import torch

    from models.engine import DEFAULT_PROVIDERS
    from pipelines.engines import OnnxEngine, example_inputs, verified_onnx_path
    from pipelines.zoo import DEFAULT_MODELS, load_card

    providers = tuple(settings.provider_list() or DEFAULT_PROVIDERS)
    active: list[str] = []
    models: list[str] = []
    for model_id in sorted(set(DEFAULT_MODELS.values())):
        card = load_card(model_id)
        engine = OnnxEngine(verified_onnx_path(model_id, "matmul", card), providers, threads=1)
        with torch.no_grad():
            out = engine(*example_inputs(batch=1, coils=2, shape=(16, 16)))
        if not torch.isfinite(out).all():
            raise RuntimeError(f"model {model_id} gave non-finite output on the warm-up input")
        LOG.info("warm-up: %s runs on %s", model_id, engine.provider)
        active.append(engine.provider)
        models.append(model_id)
    return {"provider": active[0] if active else None, "models": models}
