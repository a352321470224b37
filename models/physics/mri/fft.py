"""Centered, orthonormal 2D Fourier transforms over the last two image axes.

Two implementations of the same transform:

* ``fft2c`` / ``ifft2c`` on complex tensors, through ``torch.fft`` (fastMRI's convention)::

      fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho"))

  and ``FFT2c``, the same pair as a ``LinearOperator`` (unitary: its normal operator is the identity).

* ``fft2c_matmul`` / ``ifft2c_matmul`` on real tensors with complex in a trailing axis of size 2,
  written as two matrix products with the centered DFT matrix::

      F_N[k, n] = exp(-2 pi i (k - c)(n - c) / N) / sqrt(N),   c = N // 2
      fft2c(X) = F_H X F_W^T     (F is symmetric, its inverse is conj(F))

  It uses only MatMul, Cos and Sin, so every ONNX runtime (CPU, CUDA, TensorRT) can run it.
"""

from __future__ import annotations

import math

import torch

from models.physics.linop import LinearOperator

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


class FFT2c(LinearOperator):
    """The centered orthonormal 2D FFT over the last two axes as an operator: ``F``, ``F^H = ifft2c``, ``F^H F = I``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ifft2c(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return x


def centered_dft_matrix(n: int, inverse: bool = False, dtype: torch.dtype = torch.float32,
                        device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of the (n, n) centered orthonormal DFT matrix.

    The phase index ``(k - c)(n - c)`` is reduced modulo ``n`` in integer arithmetic before the
    angle is formed, so the angle stays in ``[0, 2 pi)`` and float32 keeps full accuracy for large n.
    ``n`` may be a symbolic size (torch.export / ONNX export with dynamic shapes).
    """
    idx = torch.arange(n, device=device, dtype=torch.int64) - n // 2
    prod = idx[:, None] * idx[None, :]
    # floor-division form of ``prod mod n`` and ``n ** -0.5`` (not math.sqrt) keep n symbolic
    # when the graph is exported with dynamic H/W (the exporter has no remainder by a symbolic scalar)
    phase = (prod - torch.div(prod, n, rounding_mode="floor") * n).to(dtype)
    angle = phase * (2.0 * math.pi / n)
    scale = n ** -0.5
    sign = 1.0 if inverse else -1.0
    return torch.cos(angle) * scale, sign * torch.sin(angle) * scale


def apply_dft_matrices(x: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor],
                       cols: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``A X B`` for x of shape (..., H, W, 2) with symmetric complex matrices A (H, H), B (W, W).

    ``rows`` and ``cols`` are (real, imag) pairs such as ``centered_dft_matrix`` returns; callers that
    apply many transforms of one size can build the matrices once and reuse them.
    """
    hr, hi = rows
    wr, wi = cols
    xr, xi = x[..., 0], x[..., 1]
    # rows: A @ X
    yr = hr @ xr - hi @ xi
    yi = hr @ xi + hi @ xr
    # columns: (A X) @ B   (B is symmetric)
    zr = yr @ wr - yi @ wi
    zi = yr @ wi + yi @ wr
    return torch.stack((zr, zi), dim=-1)


def _complex_matmul_2d(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``F_H X F_W`` for x of shape (..., H, W, 2)."""
    h, w = x.shape[-3], x.shape[-2]
    return apply_dft_matrices(x, centered_dft_matrix(h, inverse, x.dtype, x.device),
                              centered_dft_matrix(w, inverse, x.dtype, x.device))


def fft2c_matmul(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D FFT of a real tensor (..., H, W, 2) as DFT-matrix products."""
    return _complex_matmul_2d(x, inverse=False)


def ifft2c_matmul(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D inverse FFT of a real tensor (..., H, W, 2) as DFT-matrix products."""
    return _complex_matmul_2d(k, inverse=True)


def _roll_real(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """fftshift (ifftshift if ``inverse``) over the H, W axes of a real (..., H, W, 2) tensor.

    Written as slice + concat rather than ``torch.roll``: the ONNX exporter cannot translate a roll
    whose shift depends on a dynamic size.
    """
    for dim in (-3, -2):
        n = x.shape[dim]
        shift = (n + 1) // 2 if inverse else n // 2
        x = torch.cat((x.narrow(dim, n - shift, shift), x.narrow(dim, 0, n - shift)), dim=dim)
    return x


def _fft2_real(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    x = _roll_real(x, inverse=True)  # ifftshift
    c = torch.view_as_complex(x.contiguous())
    c = (torch.fft.ifft2 if inverse else torch.fft.fft2)(c, dim=_IMAGE_DIMS, norm="ortho")
    return _roll_real(torch.view_as_real(c), inverse=False)  # fftshift


def fft2c_real(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D FFT of a real tensor (..., H, W, 2) through ``torch.fft``.

    Exports to the ONNX ``DFT`` op with the dynamo exporter (dynamic H/W included).
    """
    return _fft2_real(x, inverse=False)


def ifft2c_real(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2D inverse FFT of a real tensor (..., H, W, 2) through ``torch.fft``."""
    return _fft2_real(k, inverse=True)


FFT_VARIANTS = {
    "dft-op": (fft2c_real, ifft2c_real),
    "matmul": (fft2c_matmul, ifft2c_matmul),
}
