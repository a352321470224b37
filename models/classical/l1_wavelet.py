"""L1-wavelet compressed-sensing reconstruction for multi-coil Cartesian MRI.

Solves, per slice,

    x* = argmin_x  1/2 ||M F S x - y||_2^2 + lam * s * ||W x||_1

with ``F`` the centred orthonormal FFT, ``S`` the coil maps, ``M`` the mask, ``W`` an orthonormal
Daubechies wavelet transform (``models.physics.wavelet``) and ``s`` the data scale (below), by an
accelerated proximal-gradient method (``models.optim.fista``) on the operator ``A = M F S``
(``models.physics.mri.sense.SenseOperator``, whose normal ``A^H A`` is the shift-free fast form).

Scaling: ``s`` is the ``scale_quantile`` quantile of ``|A^H y|`` (the zero-filled SENSE image) over the
image, so ``lam`` is a fraction of a typical bright-tissue intensity and one default serves data of
any amplitude (the solution is equivariant: scaling ``y`` by ``a`` scales ``x*`` by ``a``).

Cycle spinning: as in BART's ``pics``, each proximal step shifts the image by a random offset in
``[0, 2^levels)`` per axis before the wavelet transform and back afterwards. The randomly shifted
wavelets regularise like a shift-invariant (undecimated) transform at the cost of an orthonormal one,
removing the blocky artefacts of a fixed decimated grid. ``wavelet="db2+haar"`` (the default) goes one
step further and alternates the basis between iterations, so the effective regulariser averages a
smooth (Daubechies-2) and a piecewise-constant (Haar) dictionary: on BART's phantom it gains 1.2 dB
over db2 alone, on the brain slice it is level at 4x and better at 8x (benchmarks/mri_classical.py).

Step size: ``1 / L`` with ``L = max_r sum_c |S_c(r)|^2``, an upper bound of the largest eigenvalue of
``A^H A`` (the FFT is unitary and the mask a projection), so no power iteration is needed; it is 1
for maps normalised to ``sum_c |S_c|^2 = 1``.

Line masks: when the mask is the same on every row (Cartesian sampling of phase-encode lines along the last
axis, as all the masks of ``pipelines.sampling`` are), the FFT along the fully sampled axis is unitary and commutes
with the mask, so ``A^H A`` needs only 1D FFTs along the sampled axis (``column_normal``): the same operator with
half the FFT work, equal to the 2D form to float rounding.

Image sizes that ``2^levels`` does not divide are handled by solving for a zero-padded image
``u`` (``x = crop(u)``), on which the wavelet transform is exactly orthonormal, so the proximal step
stays exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.optim.fista import METHODS, proximal_gradient
from models.optim.prox import soft_threshold
from models.physics.linop import FunctionOperator
from models.physics.mri.sense import SenseOperator, SoftSenseOperator, checkerboard
from models.physics.wavelet import WaveletTransform, approximation_mask, default_levels, dwt2, idwt2

# Tuned on BART's phantom and the ICBM152 brain slice at 4x and 8x (the earlier benchmarks/mri_classical.py). ``lam``
# here is the fixed weight of direct calls, and ``max_iter`` their fixed count; the l1-wavelet method chooses both from
# the measured noise level and the acceleration instead (models.classical.noise_rules: RULES, ITERATION_RULES).
DEFAULTS = {
    "lam": 5e-4,
    "max_iter": 60,
    "wavelet": "db2+haar",
    "levels": None,
    "random_shift": True,
    "method": "pogm",
    "scale_quantile": 0.99,
    "threshold_coarse": True,
    "continuation": 30.0,
    "continuation_frac": 0.3,
}


def check_kspace_inputs(kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the problem unless k-space, mask and maps are complex, finite and match."""
    if not kspace.is_complex():
        raise ValueError(f"kspace must be a complex tensor, got dtype {kspace.dtype}")
    if kspace.ndim < 3:
        raise ValueError(f"kspace must have shape (..., coils, H, W), got {tuple(kspace.shape)}")
    if maps.shape[-3:] != kspace.shape[-3:]:
        raise ValueError(f"maps shape {tuple(maps.shape)} does not match kspace shape {tuple(kspace.shape)} "
                         "in (coils, H, W)")
    try:
        lead = maps.shape[:-4] if maps.ndim == kspace.ndim + 1 else maps.shape[:-3]
        torch.broadcast_shapes(lead, kspace.shape[:-3])
        torch.broadcast_shapes(mask.shape, kspace.shape)
    except RuntimeError as err:
        raise ValueError(f"mask {tuple(mask.shape)} / maps {tuple(maps.shape)} do not broadcast to kspace "
                         f"{tuple(kspace.shape)}") from err
    if not bool(torch.any(mask != 0)):
        raise ValueError("mask is empty: no sampled k-space")
    if not bool(torch.isfinite(torch.view_as_real(kspace)).all()):
        raise ValueError("kspace contains non-finite values")


def data_scale(image: torch.Tensor, quantile: float = DEFAULTS["scale_quantile"], image_dims: int = 2) -> torch.Tensor:
    """Per-slice ``quantile`` of ``|image|`` over the last ``image_dims`` axes (kept as size 1), never zero."""
    mag = image.abs().flatten(-image_dims)
    q = torch.quantile(mag, quantile, dim=-1) if mag.shape[-1] <= 16_000_000 else mag.amax(-1)
    q = q.clamp_min(torch.finfo(mag.dtype).tiny)
    return q.reshape(*q.shape, *([1] * image_dims))


def lipschitz_bound(maps: torch.Tensor, sets: bool = False) -> float:
    """Upper bound of the largest eigenvalue of ``A^H A`` for ``A = M F S``.

    One set (..., C, H, W): ``max_r sum_c |S_c(r)|^2``. Several sets (..., M, C, H, W): Gershgorin's
    bound on the per-pixel M x M Gram matrix ``S(r)^H S(r)`` (exact for orthogonal ESPIRiT sets).
    """
    if not sets:
        return float((maps.real.square() + maps.imag.square()).sum(dim=-3).amax())
    gram = torch.einsum("...mchw,...nchw->...mnhw", maps.conj(), maps)
    return float(gram.abs().sum(dim=-3).amax())


def _line_mask(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor | None:
    """The mask as a (W,) vector when it is the same on every row of the (H, W) grid (and on every leading index),
    else None."""
    full = mask.reshape(-1, *mask.shape[-2:]) if mask.ndim >= 2 else mask.reshape(1, 1, -1)
    if full.shape[-1] != shape[1]:
        return None
    first = full[:1, :1]
    return first.reshape(-1) if bool((full == first).all()) else None


class _LineMaskSense(SenseOperator):
    """``SenseOperator`` whose normal uses 1D FFTs along the last axis: for a mask ``m`` (W,) equal on every row,
    ``F^H M F = F_W^H M F_W`` (the FFT along H is unitary and commutes with the mask). The centring is folded into
    the maps as in ``models.physics.mri.sense.fast_normal`` (even W; the row sign of the checkerboard cancels in
    ``S^H ... S`` since nothing mixes rows)."""

    def __init__(self, maps: torch.Tensor, line: torch.Tensor):
        super().__init__(maps, line.reshape(1, -1))
        h, w = maps.shape[-2:]
        self._dmaps = maps * checkerboard(h, w, maps.real.dtype, maps.device)
        self._dmaps_conj = self._dmaps.conj().resolve_conj()
        self._line = line.to(maps.real.dtype)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.fft.fft(self._dmaps * x.unsqueeze(-3), dim=-1, norm="ortho") * self._line
        return (self._dmaps_conj * torch.fft.ifft(k, dim=-1, norm="ortho")).sum(dim=-3)


def sense_operator(maps: torch.Tensor, mask: torch.Tensor, sets: bool) -> SenseOperator:
    """``A = M F S`` for one set of maps or several (soft-SENSE); with the 1D-FFT normal for a line mask."""
    if sets:
        return SoftSenseOperator(maps, mask)
    line = _line_mask(mask, tuple(maps.shape[-2:]))
    if line is not None and maps.shape[-1] % 2 == 0:
        return _LineMaskSense(maps, line)
    return SenseOperator(maps, mask)


def l1_wavelet(kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor, lam: float = DEFAULTS["lam"],
               max_iter: int = DEFAULTS["max_iter"], wavelet: str = DEFAULTS["wavelet"],
               levels: int | None = DEFAULTS["levels"], random_shift: bool = DEFAULTS["random_shift"],
               method: str = DEFAULTS["method"], scale_quantile: float = DEFAULTS["scale_quantile"],
               threshold_coarse: bool = DEFAULTS["threshold_coarse"], continuation: float = DEFAULTS["continuation"],
               continuation_frac: float = DEFAULTS["continuation_frac"], x0: torch.Tensor | None = None, seed: int = 0,
               callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """L1-wavelet reconstruction of k-space (..., C, H, W) with mask and maps; returns (..., H, W).

    ``maps`` (..., C, H, W), or (..., M, C, H, W) for M sets of ESPIRiT maps (soft-SENSE, as BART's
    ``pics`` with ``ecalib -m M``); then the result is (..., M, H, W), one image per set, each
    regularised on its own (combine by root-sum-of-squares over the set axis for display).

    ``lam``: regularisation weight relative to the data scale (module docstring); ``max_iter``:
    proximal-gradient iterations; ``method``: ``fista``, ``pogm`` or ``ista``; ``wavelet``: a name from
    ``models.physics.wavelet.WAVELETS`` or several joined by ``+`` (used in turn); ``levels``: wavelet
    levels (default: coarsest band at least 16 pixels); ``threshold_coarse``: also shrink the coarsest
    approximation band (as BART does; keeping it lets a low-frequency haze survive outside the object);
    ``continuation``: the threshold starts at ``continuation * lam`` and decays geometrically to
    ``lam`` over the first ``continuation_frac * max_iter`` iterations (faster removal of aliasing,
    then the small final ``lam`` keeps detail); ``x0``: start image (default: zero-filled ``A^H y``);
    ``seed``: seeds the random shifts; ``callback(iteration, total)`` reports progress.
    """
    check_kspace_inputs(kspace, mask, maps)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if continuation < 1:
        raise ValueError(f"continuation must be >= 1, got {continuation}")
    h, w = kspace.shape[-2:]
    sets = maps.ndim == kspace.ndim + 1
    op = sense_operator(maps, mask, sets)
    aty = op.adjoint(kspace)
    if x0 is not None and x0.shape != aty.shape:
        raise ValueError(f"x0 shape {tuple(x0.shape)} does not match the image shape {tuple(aty.shape)}")
    lipschitz = lipschitz_bound(maps, sets)
    if lipschitz <= 0:
        raise ValueError("maps are all zero")
    step = 1.0 / lipschitz
    # per slice (all map sets together), times the step inside prox
    threshold = lam * data_scale(aty, scale_quantile, 3 if sets else 2)

    wavelets = wavelet.split("+")
    levels = default_levels((h, w)) if levels is None else levels
    transform = WaveletTransform((h, w), wavelets[0], levels)  # validates levels
    for name in wavelets[1:]:
        WaveletTransform((h, w), name, levels)
    ph, pw = transform.coeff_shape
    padded = (ph, pw) != (h, w)
    keep_coarse = None if threshold_coarse else approximation_mask((ph, pw), levels)
    gen = torch.Generator().manual_seed(seed)
    calls = [0]
    ramp = max(1.0, continuation_frac * max_iter)
    period = 2**levels

    def crop(u: torch.Tensor) -> torch.Tensor:
        return u[..., :h, :w] if padded else u

    def pad(x: torch.Tensor) -> torch.Tensor:
        if not padded:
            return x
        out = x.new_zeros(*x.shape[:-2], ph, pw)
        out[..., :h, :w] = x
        return out

    # the problem is posed on the padded image u: A_pad = A crop, whose gradient is pad(A^H A crop(u) - A^H y)
    op_padded = op @ FunctionOperator(crop, pad) if padded else op

    def prox(v: torch.Tensor, t: float) -> torch.Tensor:
        shifts = tuple(int(s) for s in torch.randint(0, period, (2,), generator=gen)) if random_shift else (0, 0)
        vs = torch.roll(v, shifts, dims=(-2, -1)) if random_shift else v
        k = calls[0]
        calls[0] += 1
        wav = wavelets[k % len(wavelets)]
        coeffs = dwt2(vs, levels, wav)
        boost = continuation ** max(0.0, 1.0 - k / ramp) if continuation > 1 else 1.0
        shrunk = soft_threshold(coeffs, threshold * (t * boost))
        if keep_coarse is not None:
            shrunk = torch.where(keep_coarse, coeffs, shrunk)
        out = idwt2(shrunk, levels, wav)
        return torch.roll(out, (-shifts[0], -shifts[1]), dims=(-2, -1)) if random_shift else out

    start = pad(aty if x0 is None else x0)
    u = proximal_gradient(op_padded, kspace, prox, start, step, max_iter, method=method, callback=callback)
    return crop(u)
