"""Centered, orthonormal 2D Fourier transforms over the last two image axes.

Two implementations of the same transform:

* ``fft2c`` / ``ifft2c`` on complex tensors, through ``torch.fft`` (fastMRI's convention)::

      fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho"))

* ``fft2c_matmul`` / ``ifft2c_matmul`` on real tensors with complex in a trailing axis of size 2,
  written as two matrix products with the centered DFT matrix::

      F_N[k, n] = exp(-2 pi i (k - c)(n - c) / N) / sqrt(N),   c = N // 2
      fft2c(X) = F_H X F_W^T     (F is symmetric, its inverse is conj(F))

  It uses only MatMul, Cos and Sin, so every ONNX runtime (CPU, CUDA, TensorRT) can run it.
"""

from __future__ import annotations

import math

import torch

_IMAGE_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D FFT of a complex tensor over its last two axes."""
    x = torch.fft.ifftshift(x, dim=_IMAGE_DIMS)
    x = torch.fft.fft2(x, dim=_IMAGE_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_IMAGE_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D inverse FFT of a complex tensor over its last two axes."""
    k = torch.fft.ifftshift(k, dim=_IMAGE_DIMS)
    k = torch.fft.ifft2(k, dim=_IMAGE_DIMS, norm="ortho")
    return torch.fft.fftshift(k, dim=_IMAGE_DIMS)


def centered_dft_matrix(n: int, inverse: bool = False, dtype: torch.dtype = torch.float32,
                        device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the (n, n) centered orthonormal DFT matrix.

    The phase index ``(k - c)(n - c)`` is reduced modulo ``n`` in integer arithmetic before the
    angle is formed, so the angle stays in ``[0, 2 pi)`` and float32 keeps full accuracy for large n.
    """
    idx = torch.arange(n, device=device, dtype=torch.int64) - n // 2
    phase = torch.remainder(idx[:, None] * idx[None, :], n).to(dtype)
    angle = phase * (2.0 * math.pi / n)
    scale = 1.0 / math.sqrt(n)
    sign = 1.0 if inverse else -1.0
    return torch.cos(angle) * scale, sign * torch.sin(angle) * scale


def _complex_matmul_2d(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``F_H X F_W`` for x of shape (..., H, W, 2)."""
    h, w = x.shape[-3], x.shape[-2]
    hr, hi = centered_dft_matrix(h, inverse, x.dtype, x.device)
    wr, wi = centered_dft_matrix(w, inverse, x.dtype, x.device)
    xr, xi = x[..., 0], x[..., 1]
    # rows: F_H @ X
    yr = hr @ xr - hi @ xi
    yi = hr @ xi + hi @ xr
    # columns: (F_H X) @ F_W   (F_W is symmetric)
    zr = yr @ wr - yi @ wi
    zi = yr @ wi + yi @ wr
    return torch.stack((zr, zi), dim=-1)


def fft2c_matmul(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D FFT of a real tensor (..., H, W, 2) as DFT-matrix products."""
    return _complex_matmul_2d(x, inverse=False)


def ifft2c_matmul(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D inverse FFT of a real tensor (..., H, W, 2) as DFT-matrix products."""
    return _complex_matmul_2d(k, inverse=True)


def fft2c_real(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D FFT of a real tensor (..., H, W, 2) through ``torch.fft``.

    Exports to the ONNX ``DFT`` op with the dynamo exporter.
    """
    return torch.view_as_real(fft2c(torch.view_as_complex(x.contiguous())))


def ifft2c_real(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D inverse FFT of a real tensor (..., H, W, 2) through ``torch.fft``."""
    return torch.view_as_real(ifft2c(torch.view_as_complex(k.contiguous())))


FFT_VARIANTS = {
    "dft-op": (fft2c_real, ifft2c_real),
    "matmul": (fft2c_matmul, ifft2c_matmul),
}
