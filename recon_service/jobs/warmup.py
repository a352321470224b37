"""Warm-up: load the shipped default models and run each once, so the first job does not pay for it.

It goes through the same registry call and parameters as a job (:func:`runner.service_params`), so the model
and engine caches it fills are the ones jobs use, and the provider it reports is the one jobs will get.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from recon_service.jobs.catalog import get_pipeline, pipeline_name
from recon_service.jobs.runner import service_params
from recon_service.settings import Settings

LOG = logging.getLogger(__name__)


class WarmUpError(RuntimeError):
    """A shipped model could not be loaded or run; the service should not report itself ready."""


def tiny_acquisition(size: int = 32, coils: int = 2):
    """One slice of random multi-coil k-space, undersampled 2x with 8 calibration lines."""
    from pipelines.data import MRIAcquisition

    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((1, coils, size, size)) + 1j * rng.standard_normal((1, coils, size, size)))
    mask = np.zeros((1, size), dtype=np.float32)
    mask[0, ::2] = 1
    mask[0, size // 2 - 4:size // 2 + 4] = 1
    return MRIAcquisition(kspace=(kspace * mask).astype(np.complex64), mask=mask, num_low_frequencies=8)


def tiny_ct_acquisition(size: int = 16, views: int = 4, slices: int = 2):
    """A sinogram of a uniform disc, parallel beam (``size`` a multiple of the priors' size multiple)."""
    import torch

    from models.physics.ct.geometry import parallel_beam
    from models.physics.ct.projector import CTProjector
    from pipelines.data import CTAcquisition

    geom = parallel_beam(size, views, pixel_size=2.0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = ((xx ** 2 + yy ** 2) <= (size / 3) ** 2).astype(np.float32) * 0.02
    sino = CTProjector(geom).forward(torch.from_numpy(np.stack([disc] * slices))).numpy()
    return CTAcquisition(sinogram=sino.astype(np.float32), angles=geom.angles_array(), geometry=geom.to_dict())


def warm_up(settings: Settings) -> dict[str, str]:
    """Load every default model (``pipelines.reconstructors.default_models``) and run it once on a tiny input
    of its modality (diffusion priors, the methods with ``steps``, for 2 steps).

    Returns ``{model_id: engine provider}`` (e.g. ``"onnxruntime:CPUExecutionProvider"``); raises
    :class:`WarmUpError` naming the model that failed. Callable from the API process and from workers; the
    caches it fills are per process. Whether to call it at all is ``settings.warmup``, the caller's choice.
    """
    from pipelines.reconstructors import default_models

    inputs = {"mri": tiny_acquisition(), "ct": tiny_ct_acquisition()}
    providers: dict[str, str] = {}
    for modality, acq in inputs.items():
        for method, model_id in default_models(modality).items():
            short = {"steps": 2} if "steps" in get_pipeline(pipeline_name(modality, method)).method.defaults else {}
            providers[model_id] = _warm(settings, modality, method, model_id, acq, short)
    return providers


def _warm(settings: Settings, modality: str, method: str, model_id: str, acq, extra: dict) -> str:
    from pipelines.pipeline import reconstruct

    start = time.perf_counter()
    try:
        info = get_pipeline(pipeline_name(modality, method))
        volume = reconstruct(acq, method, service_params(settings, info, {"model_id": model_id, **extra})).volume
    except Exception as err:
        raise WarmUpError(f"model {model_id!r} ({method}) failed to load or run: {err}") from err
    if not np.all(np.isfinite(volume.data)):
        raise WarmUpError(f"model {model_id!r} ({method}) gave non-finite output on the warm-up input")
    provider = str(volume.attrs.get("engine"))
    LOG.info("warmed up %s on %s in %.2f s", model_id, provider, time.perf_counter() - start)
    return provider


def warm_up_or_log(settings: Settings) -> None:
    """:func:`warm_up` for a worker about to take jobs: a model that fails is logged, not fatal; the jobs of that
    model then fail with the reason."""
    try:
        LOG.info("warm-up: %s", warm_up(settings))
    except WarmUpError as err:
        LOG.error("warm-up failed: %s", err)
