"""ONNX engines for the shipped networks: export from the zoo, parity check, and an ONNX Runtime
session callable like the torch module (``engine(masked_kspace, mask, sens_maps) -> image``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.engine.onnx_export import export_onnx
from models.engine.session import DEFAULT_PROVIDERS, create_session
from models.physics.mri.fft import FFT_VARIANTS
from pipelines.zoo import ZOO_DIR, ModelError, load_card, load_model, model_dir, save_card, sha256_of


def onnx_path(model_id: str, fft: str, zoo: Path = ZOO_DIR) -> Path:
    return model_dir(model_id, zoo) / f"model-{fft}.onnx"


def example_inputs(batch: int = 1, coils: int = 4, shape: tuple[int, int] = (32, 24),
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random inputs of the network's layout; the mask is 2D (N, 1, H, W, 1) so the export takes any mask."""
    gen = torch.Generator().manual_seed(seed)
    h, w = shape
    mask = (torch.rand((batch, 1, h, w, 1), generator=gen) < 0.4).float()
    mask[:, :, :, w // 2 - 2:w // 2 + 2] = 1
    kspace = torch.randn((batch, coils, h, w, 2), generator=gen) * mask
    maps = torch.randn((batch, coils, h, w, 2), generator=gen)
    maps = maps / maps.pow(2).sum(dim=(1, 4), keepdim=True).sqrt()
    return kspace, mask, maps


class OnnxEngine:
    """An ONNX Runtime session with the torch module's call signature."""

    def __init__(self, path: Path, providers: Sequence[str] = DEFAULT_PROVIDERS, threads: int | None = None,
                 trt_options: dict | None = None):
        self.session, self.provider = create_session(path, providers, trt_options=trt_options, threads=threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
        mask = mask.expand(masked_kspace.shape[0], 1, *masked_kspace.shape[2:4], 1)
        feeds = {name: np.ascontiguousarray(t.numpy(), dtype=np.float32)
                 for name, t in zip(self.input_names, (masked_kspace, mask, sens_maps), strict=True)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def parity_psnr(reference: torch.Tensor, other: torch.Tensor, mse_floor: float = 0.0) -> float:
    """PSNR of ``other`` against ``reference`` (data range = max |reference|) in dB; inf for identical outputs
    unless ``mse_floor`` > 0 bounds it (a card's JSON cannot hold inf)."""
    ref = reference.double()
    mse = max(float(((other.double() - ref) ** 2).mean()), mse_floor)
    return float("inf") if mse == 0 else float(10 * np.log10(float(ref.abs().max()) ** 2 / mse))


def export_zoo_model(model_id: str, fft: str = "matmul", out: Path | None = None,
                     zoo: Path = ZOO_DIR) -> tuple[Path, float]:
    """Export a zoo model to ONNX with the chosen FFT and check ONNX Runtime CPU against torch.

    Returns the file and the parity PSNR (dB) on an input of another shape and coil count than the
    export example, which also proves the dynamic axes.
    """
    if fft not in FFT_VARIANTS:
        raise ModelError(f"unknown FFT variant {fft!r}; choose one of {', '.join(FFT_VARIANTS)}")
    model, _ = load_model(model_id, zoo)
    model.set_fft_variant(fft)
    path = export_onnx(model, example_inputs(), out or onnx_path(model_id, fft, zoo))
    check = example_inputs(batch=1, coils=5, shape=(40, 36), seed=1)
    with torch.no_grad():
        expected = model(*check)
    got = OnnxEngine(path, ("CPUExecutionProvider",))(*check)
    psnr_db = parity_psnr(expected, got)
    if path.parent == model_dir(model_id, zoo):
        _record_engine(model_id, path, fft, psnr_db, zoo)
    return path, psnr_db


def _record_engine(model_id: str, path: Path, fft: str, psnr_db: float, zoo: Path) -> None:
    """List an engine file in the model's card with its checksum, so a changed file is refused."""
    card = load_card(model_id, zoo)
    card.setdefault("engines", {})[path.name] = {
        "format": "onnx", "fft": fft, "sha256": sha256_of(path), "parity_psnr_db_vs_torch": round(psnr_db, 1),
        "dynamic_axes": "batch, coils, H, W"}
    save_card(card, zoo)


def verified_onnx_path(model_id: str, fft: str, card: dict, zoo: Path = ZOO_DIR) -> Path:
    """The model's ONNX file for ``fft``, checked against the checksum in its card."""
    path = onnx_path(model_id, fft, zoo)
    if not path.exists():
        raise ModelError(f"no ONNX engine {path}; make it with `recon export {model_id} --format onnx --fft {fft}`")
    listed = card.get("engines", {}).get(path.name)
    if listed is None:
        raise ModelError(f"{path} is not listed in the card of {model_id}; re-export it with `recon export`")
    if sha256_of(path) != listed["sha256"]:
        raise ModelError(f"{path}: checksum mismatch with the card; the engine is corrupt or was replaced")
    return path
