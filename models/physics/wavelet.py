"""Orthonormal 2D discrete wavelet transform (Daubechies family) in torch, periodic extension.

One level on a signal of even length ``N`` with the orthonormal filter pair ``(g, h)`` of length ``L``
(scaling and wavelet filters, ``h[j] = (-1)^j g[L-1-j]``)::

    a[k] = sum_j g[j] x[(2k + j) mod N],    d[k] = sum_j h[j] x[(2k + j) mod N],   k < N / 2

The analysis matrix is orthogonal, so the inverse is its transpose, computed in polyphase form
(strided slices and multiply-adds, faster on CPU than small convolutions). In 2D the step runs along
the rows and then the columns, giving the four bands LL, LH, HL, HH of size (H/2, W/2); the next
level transforms LL again.

Coefficients are kept in the Mallat layout: one tensor of the (padded) image shape whose top-left
``H / 2^J x W / 2^J`` corner holds the coarsest approximation and whose other blocks hold the details
of each level. Sizes not divisible by ``2^J`` are zero-padded at the end first, so ``W^H W = I``
always holds (perfect reconstruction) and ``W`` is exactly orthogonal when no padding is needed.

Complex input is transformed as real and imaginary parts (the filters are real).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from models.physics.linop import LinearOperator

WAVELETS = ("haar", "db1", "db2", "db3", "db4", "db5", "db6", "db7", "db8")


@lru_cache(maxsize=16)
def _filters(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Synthesis (reconstruction) low-pass and high-pass filters, orthonormal."""
    import pywt  # filter coefficient tables only

    if name not in WAVELETS:
        raise ValueError(f"unknown wavelet {name!r}; choose one of {', '.join(WAVELETS)}")
    w = pywt.Wavelet("db1" if name == "haar" else name)
    return tuple(w.rec_lo), tuple(w.rec_hi)


def filter_length(wavelet: str) -> int:
    return len(_filters(wavelet)[0])


def default_levels(shape: tuple[int, int], wavelet: str = "db4", min_size: int = 16) -> int:
    """Levels such that the coarsest band keeps at least ``min_size`` samples per side (at least 1)."""
    levels = 0
    h, w = shape
    while min(h, w) // 2 >= min_size and min(h, w) >= 2:
        h, w = (h + 1) // 2, (w + 1) // 2
        levels += 1
    return max(levels, 1)


def padded_shape(shape: tuple[int, int], levels: int) -> tuple[int, int]:
    """The smallest shape >= ``shape`` with both sides divisible by ``2**levels``."""
    m = 2**levels
    return (math.ceil(shape[0] / m) * m, math.ceil(shape[1] / m) * m)


def _take(x: torch.Tensor, dim: int, start: int, stop: int, step: int = 1) -> torch.Tensor:
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, stop, step)
    return x[tuple(index)]


def _wrap(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Periodic extension of ``x`` along ``dim`` by ``before``/``after`` samples."""
    n = x.shape[dim]
    if before == 0 and after == 0:
        return x
    if before <= n and after <= n:
        parts = [_take(x, dim, n - before, n)] if before else []
        parts.append(x)
        if after:
            parts.append(_take(x, dim, 0, after))
        return torch.cat(parts, dim=dim)
    index = torch.arange(-before, n + after, device=x.device) % n
    return x.index_select(dim, index)


def _analysis(x: torch.Tensor, dim: int, lo: tuple[float, ...],
              hi: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """One level along ``dim``: ``a[k] = sum_j lo[j] x[(2k + j) mod N]``, same for ``d`` with ``hi``."""
    n, taps = x.shape[dim], len(lo)
    xp = _wrap(x, dim, 0, taps - 2)
    a = d = None
    for j in range(taps):
        xj = _take(xp, dim, j, j + n, 2)
        a = xj * lo[j] if a is None else a.add_(xj, alpha=lo[j])
        d = xj * hi[j] if d is None else d.add_(xj, alpha=hi[j])
    return a, d


def _synthesis(a: torch.Tensor, d: torch.Tensor, dim: int, lo: tuple[float, ...],
               hi: tuple[float, ...]) -> torch.Tensor:
    """Adjoint (= inverse) of ``_analysis``: ``x[2m + r] = sum_i lo[2i + r] a[m - i] + hi[2i + r] d[m - i]``."""
    m, half = a.shape[dim], len(lo) // 2
    ap, dp = _wrap(a, dim, half - 1, 0), _wrap(d, dim, half - 1, 0)
    even = odd = None
    for i in range(half):
        ai, di = _take(ap, dim, half - 1 - i, half - 1 - i + m), _take(dp, dim, half - 1 - i, half - 1 - i + m)
        e = ai * lo[2 * i] + di * hi[2 * i]
        o = ai * lo[2 * i + 1] + di * hi[2 * i + 1]
        even = e if even is None else even.add_(e)
        odd = o if odd is None else odd.add_(o)
    out = torch.stack((even, odd), dim=dim + 1 if dim >= 0 else dim)
    shape = list(a.shape)
    shape[dim] = 2 * m
    return out.reshape(shape)


def _dwt_level(x: torch.Tensor, lo, hi) -> torch.Tensor:
    """(B, H, W) -> (B, H, W) with bands [[LL, LH], [HL, HH]] (first letter: band along H)."""
    h2, w2 = x.shape[-2] // 2, x.shape[-1] // 2
    low_w, high_w = _analysis(x, -1, lo, hi)
    out = torch.empty_like(x)
    out[:, :h2, :w2], out[:, h2:, :w2] = _analysis(low_w, -2, lo, hi)
    out[:, :h2, w2:], out[:, h2:, w2:] = _analysis(high_w, -2, lo, hi)
    return out


def _idwt_level(y: torch.Tensor, lo, hi) -> torch.Tensor:
    h2, w2 = y.shape[-2] // 2, y.shape[-1] // 2
    low_w = _synthesis(y[:, :h2, :w2], y[:, h2:, :w2], -2, lo, hi)
    high_w = _synthesis(y[:, :h2, w2:], y[:, h2:, w2:], -2, lo, hi)
    return _synthesis(low_w, high_w, -1, lo, hi)


def _as_real_batch(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], bool]:
    complex_in = x.is_complex()
    lead = x.shape[:-2]
    if complex_in:
        x = torch.view_as_real(x).movedim(-1, 0)  # (2, ..., H, W)
    return x.reshape(-1, *x.shape[-2:]), lead, complex_in


def _from_real_batch(x: torch.Tensor, lead: tuple[int, ...], complex_in: bool) -> torch.Tensor:
    if complex_in:
        x = x.reshape(2, *lead, *x.shape[-2:])
        return torch.complex(x[0], x[1])
    return x.reshape(*lead, *x.shape[-2:])


def dwt2(x: torch.Tensor, levels: int, wavelet: str = "db4") -> torch.Tensor:
    """Multi-level orthonormal periodic 2D DWT of ``x`` (..., H, W), H and W divisible by ``2**levels``.

    Returns the coefficients in the Mallat layout, same shape and dtype as ``x``.
    """
    h, w = x.shape[-2:]
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if h % 2**levels or w % 2**levels:
        raise ValueError(f"image size {h}x{w} is not divisible by 2**levels = {2**levels}; pad it "
                         "(WaveletTransform does) or use fewer levels")
    xb, lead, complex_in = _as_real_batch(x)
    lo, hi = _filters(wavelet)
    out = xb.clone()
    for j in range(levels):
        hj, wj = h >> j, w >> j
        out[:, :hj, :wj] = _dwt_level(out[:, :hj, :wj], lo, hi)
    return _from_real_batch(out, lead, complex_in)


def idwt2(c: torch.Tensor, levels: int, wavelet: str = "db4") -> torch.Tensor:
    """Inverse (= adjoint) of ``dwt2``."""
    h, w = c.shape[-2:]
    if h % 2**levels or w % 2**levels:
        raise ValueError(f"coefficient size {h}x{w} is not divisible by 2**levels = {2**levels}")
    cb, lead, complex_in = _as_real_batch(c)
    lo, hi = _filters(wavelet)
    out = cb.clone()
    for j in reversed(range(levels)):
        hj, wj = h >> j, w >> j
        out[:, :hj, :wj] = _idwt_level(out[:, :hj, :wj], lo, hi)
    return _from_real_batch(out, lead, complex_in)


def approximation_mask(shape: tuple[int, int], levels: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (H, W) mask of the coarsest approximation band in the Mallat layout."""
    m = torch.zeros(shape, dtype=torch.bool, device=device)
    m[: shape[0] >> levels, : shape[1] >> levels] = True
    return m


class WaveletTransform(LinearOperator):
    """``W x = dwt2(pad(x))`` for images (..., H, W); ``W^H c = crop(idwt2(c))``.

    Zero padding at the end to a multiple of ``2**levels`` keeps ``W^H W = I`` for any size.
    ``levels=None`` picks ``default_levels(shape)``.
    """

    def __init__(self, shape: tuple[int, int], wavelet: str = "db4", levels: int | None = None):
        filter_length(wavelet)  # validates the name
        self.shape = (int(shape[0]), int(shape[1]))
        self.wavelet = wavelet
        self.levels = default_levels(self.shape) if levels is None else int(levels)
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")
        self.coeff_shape = padded_shape(self.shape, self.levels)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.shape:
            raise ValueError(f"image shape {tuple(x.shape[-2:])} does not match the transform's {self.shape}")
        ph, pw = self.coeff_shape[0] - self.shape[0], self.coeff_shape[1] - self.shape[1]
        if ph == 0 and pw == 0:
            return x
        out = x.new_zeros(*x.shape[:-2], *self.coeff_shape)
        out[..., : self.shape[0], : self.shape[1]] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dwt2(self._pad(x), self.levels, self.wavelet)

    def adjoint(self, c: torch.Tensor) -> torch.Tensor:
        if c.shape[-2:] != self.coeff_shape:
            raise ValueError(f"coefficient shape {tuple(c.shape[-2:])} does not match {self.coeff_shape}")
        return idwt2(c, self.levels, self.wavelet)[..., : self.shape[0], : self.shape[1]]
