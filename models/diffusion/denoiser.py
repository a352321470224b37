"""The denoiser protocol the samplers call, and wrappers that apply a 2D denoiser to volumes.

A denoiser is any callable ``eps_hat = denoiser(x_t, t)`` with ``x_t`` a float32 tensor ``(N, 1, H, W)`` of
noisy slices at the integer timestep ``t`` (one for the whole batch) and ``eps_hat`` the predicted noise of the
same shape, so that Tweedie's formula gives the posterior mean of the clean slices,
``E[x_0 | x_t] = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)``. It may be a torch module
(``TorchDenoiser``), an ONNX Runtime session (``OnnxDenoiser``), or a closed-form denoiser
(``models.diffusion.gaussian``).

``SliceBatched`` turns it into a volume denoiser: a volume ``(..., H, W)`` (e.g. ``(Z, H, W)``) is cut into its
``prod(...)`` slices, which go through the denoiser in chunks of at most ``max_batch`` (the memory budget), without
autograd, and are put back in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


class Denoiser(Protocol):
    """``eps_hat = denoiser(x_t, t)``: ``x_t`` ``(N, 1, H, W)`` float32, ``t`` an int; ``eps_hat`` shaped like
    ``x_t``."""

    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor: ...


class TorchDenoiser:
    """A torch module ``module(x_t, timesteps)`` (e.g. MONAI's ``DiffusionModelUNet``) as a ``Denoiser``.

    The module is put in eval mode and moved to ``device``; each call moves ``x_t`` there (float32), passes
    ``t`` as an int64 tensor of shape ``(N,)`` and returns ``eps_hat`` on ``x_t``'s device, without autograd.
    """

    def __init__(self, module: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        if x_t.ndim != 4 or x_t.shape[1] != 1:
            raise ValueError(f"x_t must be (N, 1, H, W), got shape {tuple(x_t.shape)}")
        with torch.no_grad():
            timesteps = torch.full((x_t.shape[0],), int(t), dtype=torch.int64, device=self.device)
            eps = self.module(x_t.to(device=self.device, dtype=torch.float32), timesteps)
        return eps.to(device=x_t.device, dtype=x_t.dtype)


class SliceBatched:
    """Apply a 2D ``Denoiser`` to every slice of a volume ``(..., H, W)``, at most ``max_batch`` slices at a time.

    ``volume_eps = SliceBatched(denoiser, max_batch)(volume, t)`` has the volume's shape and dtype (real volumes
    only: the slices go to the denoiser as float32 ``(n, 1, H, W)``). No autograd graph is kept.
    """

    def __init__(self, denoiser: Denoiser, max_batch: int = 8):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        self.denoiser = denoiser
        self.max_batch = max_batch

    def __call__(self, volume: torch.Tensor, t: int) -> torch.Tensor:
        if volume.ndim < 2:
            raise ValueError(f"volume must have at least the axes (H, W), got shape {tuple(volume.shape)}")
        if volume.is_complex():
            raise TypeError("SliceBatched takes real volumes (a 2D prior of complex images needs its own wrapper)")
        h, w = volume.shape[-2:]
        n = math.prod(volume.shape[:-2])
        slices = volume.reshape(n, 1, h, w).to(torch.float32)
        out = torch.empty_like(slices)
        with torch.no_grad():
            for start in range(0, n, self.max_batch):
                chunk = slices[start:start + self.max_batch]
                eps = self.denoiser(chunk, t)
                if eps.shape != chunk.shape:
                    raise ValueError(f"the denoiser returned shape {tuple(eps.shape)} for input {tuple(chunk.shape)}")
                out[start:start + self.max_batch] = eps
        return out.reshape(volume.shape).to(volume.dtype)


def as_volume_denoiser(denoiser: Denoiser | SliceBatched, max_batch: int = 8) -> SliceBatched:
    """``denoiser`` itself if it is already a ``SliceBatched``, else ``SliceBatched(denoiser, max_batch)``."""
    return denoiser if isinstance(denoiser, SliceBatched) else SliceBatched(denoiser, max_batch)


class OnnxDenoiser:
    """An exported prior (inputs ``x`` ``(N, 1, H, W)`` float32 and ``timesteps`` ``(N,)`` int64, output ``eps``)
    run by ONNX Runtime as a ``Denoiser``: the serving path (no gradient through the network is needed).
    ``provider`` is the execution provider the session really uses."""

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None):
        from models.engine.session import create_session

        self.session, self.provider = create_session(path, providers, threads=threads)

    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        if x_t.ndim != 4 or x_t.shape[1] != 1:
            raise ValueError(f"x_t must be (N, 1, H, W), got shape {tuple(x_t.shape)}")
        x = x_t.detach().to("cpu", torch.float32).numpy()
        steps = np.full((x.shape[0],), int(t), dtype=np.int64)
        eps = self.session.run(None, {"x": x, "timesteps": steps})[0]
        return torch.from_numpy(eps).to(device=x_t.device, dtype=x_t.dtype)
