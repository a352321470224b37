"""Complex arithmetic on real tensors with complex in a trailing axis of size 2.

The unrolled networks are exported to ONNX, which has no complex type, so every complex
operation inside their forward pass is written on (real, imag) pairs::

    a = (ar, ai),  b = (br, bi)
    a * b        = (ar br - ai bi,  ar bi + ai br)
    conj(a) * b  = (ar br + ai bi,  ar bi - ai br)

Coil operators with sensitivity maps ``S`` (N, C, H, W, 2):

* expand  ``E(x)_c = S_c x``                 image (N, H, W, 2) -> coil images (N, C, H, W, 2)
* reduce  ``R(z) = sum_c conj(S_c) z_c``     coil images (N, C, H, W, 2) -> image (N, H, W, 2)

``reduce`` is the adjoint of ``expand``.
"""

from __future__ import annotations

import torch

from models.physics.mri.fft import FFT_VARIANTS, apply_dft_matrices, centered_dft_matrix, fft2c_real, ifft2c_real

COIL_DIM = 1


def complex_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise product ``a * b`` of two broadcastable (..., 2) tensors."""
    ar, ai = a[..., 0], a[..., 1]
    br, bi = b[..., 0], b[..., 1]
    return torch.stack((ar * br - ai * bi, ar * bi + ai * br), dim=-1)


def complex_conj(a: torch.Tensor) -> torch.Tensor:
    """Complex conjugate of a (..., 2) tensor."""
    return torch.stack((a[..., 0], -a[..., 1]), dim=-1)


def complex_mul_conj(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``conj(a) * b`` without forming ``conj(a)``."""
    ar, ai = a[..., 0], a[..., 1]
    br, bi = b[..., 0], b[..., 1]
    return torch.stack((ar * br + ai * bi, ar * bi - ai * br), dim=-1)


def complex_abs(a: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Magnitude ``sqrt(re^2 + im^2 + eps)`` of a (..., 2) tensor (eps > 0 keeps the gradient finite at 0)."""
    return torch.sqrt(a[..., 0] ** 2 + a[..., 1] ** 2 + eps)


def expand(image: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
    """``S_c x``: image (N, H, W, 2) times maps (N, C, H, W, 2) -> (N, C, H, W, 2)."""
    return complex_mul(sens_maps, image.unsqueeze(COIL_DIM))


def reduce(coil_images: torch.Tensor, sens_maps: torch.Tensor) -> torch.Tensor:
    """``sum_c conj(S_c) z_c``: coil images (N, C, H, W, 2) -> image (N, H, W, 2)."""
    return complex_mul_conj(sens_maps, coil_images).sum(dim=COIL_DIM)


def check_fft_variant(fft_variant: str) -> str:
    """Validate an FFT variant name (``"dft-op"`` or ``"matmul"``) and return it."""
    if fft_variant not in FFT_VARIANTS:
        raise ValueError(f"fft_variant must be one of {sorted(FFT_VARIANTS)}, got {fft_variant!r}")
    return fft_variant


class CenteredFFT:
    """Centered orthonormal 2D FFT and inverse on (..., H, W, 2) tensors of one matrix size.

    ``"dft-op"`` goes through ``torch.fft`` (exports to the ONNX ``DFT`` op); ``"matmul"`` multiplies by
    DFT matrices (MatMul only: runs on every ONNX runtime). The matrices are built once here, from the
    (possibly symbolic) H and W of ``like``, and reused by every transform of one forward pass.
    The inverse uses ``F^-1 = conj(F)``. See :mod:`models.physics.mri.fft`.
    """

    def __init__(self, fft_variant: str, like: torch.Tensor):
        self.variant = check_fft_variant(fft_variant)
        if self.variant == "matmul":
            h, w = like.shape[-3], like.shape[-2]
            hr, hi = centered_dft_matrix(h, False, like.dtype, like.device)
            wr, wi = centered_dft_matrix(w, False, like.dtype, like.device)
            self._forward = ((hr, hi), (wr, wi))
            self._inverse = ((hr, -hi), (wr, -wi))

    def fft(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "matmul":
            return apply_dft_matrices(x, *self._forward)
        return fft2c_real(x)

    def ifft(self, k: torch.Tensor) -> torch.Tensor:
        if self.variant == "matmul":
            return apply_dft_matrices(k, *self._inverse)
        return ifft2c_real(k)


def check_inputs(masked_kspace: torch.Tensor, mask: torch.Tensor, sens_maps: torch.Tensor) -> None:
    """Shape checks shared by the unrolled networks (cheap; skipped when tracing for export)."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return
    if masked_kspace.ndim != 5 or masked_kspace.shape[-1] != 2:
        raise ValueError(f"masked_kspace must have shape (N, coils, H, W, 2), got {tuple(masked_kspace.shape)}")
    if sens_maps.shape != masked_kspace.shape:
        raise ValueError(f"sens_maps must have the shape of masked_kspace {tuple(masked_kspace.shape)}, "
                         f"got {tuple(sens_maps.shape)}")
    if mask.ndim != 5:
        raise ValueError(f"mask must have 5 dims broadcastable to (N, 1, H, W, 1), got {tuple(mask.shape)}")
    try:
        torch.broadcast_shapes(mask.shape, masked_kspace.shape)
    except RuntimeError as err:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to masked_kspace "
                         f"{tuple(masked_kspace.shape)}") from err
