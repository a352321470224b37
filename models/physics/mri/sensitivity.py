"""Coil sensitivity estimation from the autocalibration (ACS) region of k-space.

Both estimators return maps ``S`` of shape (C, H, W), complex64, normalised so that
``sum_c |S_c|^2 = 1`` inside the object and ``S = 0`` outside it.

* ``acs_maps``: low-resolution coil images from the windowed ACS block divided by their
  root-sum-of-squares. One FFT per coil: fast, slightly smoother than ESPIRiT at edges.
* ``espirit_maps``: ESPIRiT (Uecker et al. 2014) through ``sigpy.mri.app.EspiritCalib``: the
  eigenvector of the calibration-matrix kernel operator with eigenvalue ~1 at each pixel.
"""

from __future__ import annotations

import numpy as np
import torch

from models.physics.mri.fft import ifft2c

MAP_METHODS = ("acs", "espirit", "espirit-sigpy")


def _normalise(maps: np.ndarray, support: np.ndarray) -> np.ndarray:
    norm = np.sqrt((np.abs(maps) ** 2).sum(axis=0))
    out = np.where(support & (norm > 0), maps / np.maximum(norm, 1e-12), 0)
    return out.astype(np.complex64)


def _check_kspace(kspace: np.ndarray) -> None:
    if kspace.ndim != 3:
        raise ValueError(f"coil k-space must have shape (coils, H, W), got {kspace.shape}")
    if not np.all(np.isfinite(kspace)):
        raise ValueError("coil k-space contains non-finite values")


def acs_maps(kspace: np.ndarray, num_low: int, threshold: float = 0.05,
             calib_rows: int | None = None) -> np.ndarray:
    """Sensitivity maps from the central ``num_low`` columns (and ``calib_rows`` rows, default all).

    A Hann window over the calibration block suppresses ringing in the low-resolution coil images;
    pixels whose RSS is below ``threshold`` times its maximum are treated as outside the object.
    """
    _check_kspace(kspace)
    c, h, w = kspace.shape
    if num_low < 2:
        raise ValueError(f"need at least 2 calibration lines for ACS maps, got {num_low}")
    cols = slice((w - num_low + 1) // 2, (w - num_low + 1) // 2 + num_low)
    rows_n = h if calib_rows is None else min(calib_rows, h)
    rows = slice((h - rows_n + 1) // 2, (h - rows_n + 1) // 2 + rows_n)
    window = np.outer(np.hanning(rows_n + 2)[1:-1], np.hanning(num_low + 2)[1:-1]).astype(np.float32)
    calib = np.zeros_like(kspace, dtype=np.complex64)
    calib[:, rows, cols] = kspace[:, rows, cols] * window
    low = ifft2c(torch.from_numpy(calib)).numpy()
    rss = np.sqrt((np.abs(low) ** 2).sum(axis=0))
    support = rss > threshold * rss.max()
    return _normalise(low, support)


def espirit_maps(kspace: np.ndarray, num_low: int, kernel_width: int = 6, threshold: float = 0.02,
                 crop: float = 0.95) -> np.ndarray:
    """ESPIRiT maps (sigpy) from a ``num_low`` x ``num_low`` calibration square."""
    import sigpy.mri

    _check_kspace(kspace)
    if num_low <= kernel_width:
        raise ValueError(f"ESPIRiT needs more calibration lines ({num_low}) than its kernel width "
                         f"({kernel_width})")
    maps = sigpy.mri.app.EspiritCalib(kspace.astype(np.complex64), calib_width=num_low, thresh=threshold,
                                      kernel_width=kernel_width, crop=crop, show_pbar=False).run()
    maps = np.asarray(maps)
    support = (np.abs(maps) ** 2).sum(axis=0) > 0
    return _normalise(maps, support)


def estimate_maps(kspace: np.ndarray, num_low: int, method: str = "acs") -> np.ndarray:
    """Sensitivity maps by ``method``: ``acs``, ``espirit`` (our torch ESPIRiT, calibration region found
    from the sampled data) or ``espirit-sigpy``."""
    if method == "acs":
        return acs_maps(kspace, num_low)
    if method == "espirit":
        return espirit_torch(kspace).numpy().astype(np.complex64)
    if method == "espirit-sigpy":
        return espirit_maps(kspace, num_low)
    raise ValueError(f"unknown sensitivity method {method!r}; choose one of {', '.join(MAP_METHODS)}")


def calibration_region(sampled: np.ndarray, max_size: int = 24, max_area: int | None = None) -> tuple[slice, slice]:
    """The largest centred rectangle of ``sampled`` (H, W) that is fully sampled.

    Each side grows symmetrically around the centre (index ``n // 2``) up to ``max_size``; a side that
    sampling limits below ``max_size`` lets the other grow further, up to an area of ``max_area``
    (default ``max_size**2``), so a narrow band of calibration lines still gives enough equations.
    """
    h, w = sampled.shape
    max_area = max_size * max_size if max_area is None else max_area
    ch, cw = h // 2, w // 2

    def ok(rows: tuple[int, int], cols: tuple[int, int]) -> bool:
        return rows[0] >= 0 and cols[0] >= 0 and rows[1] <= h and cols[1] <= w and bool(
            sampled[rows[0]:rows[1], cols[0]:cols[1]].all())

    def span(c: int, n: int) -> tuple[int, int]:
        return c - n // 2, c - n // 2 + n

    nh = nw = 1
    if not ok(span(ch, 1), span(cw, 1)):
        raise ValueError("the k-space centre is not sampled: no calibration region")
    for limit_h, limit_w in ((max_size, max_size), (h, w)):
        grown = True
        while grown:
            grown = False
            if nh < limit_h and (nh + 1) * nw <= max_area and ok(span(ch, nh + 1), span(cw, nw)):
                nh, grown = nh + 1, True
            if nw < limit_w and nh * (nw + 1) <= max_area and ok(span(ch, nh), span(cw, nw + 1)):
                nw, grown = nw + 1, True
    rows, cols = span(ch, nh), span(cw, nw)
    return slice(*rows), slice(*cols)


def _unit_columns(vec: torch.Tensor) -> torch.Tensor:
    """Normalise the columns of (P, C, M) complex matrices (no complex ``abs``, which is slow on CPU)."""
    norm2 = torch.view_as_real(vec).square().sum(dim=(1, 3)).unsqueeze(1)
    return vec * torch.rsqrt(norm2.clamp_min(1e-30))


def _orthonormal_columns(vec: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt on the columns of (P, C, M) complex matrices (M small)."""
    cols = []
    for m in range(vec.shape[-1]):
        v = vec[..., m: m + 1]
        for q in cols:
            v = v - q * (q.conj() * v).sum(dim=1, keepdim=True)
        cols.append(_unit_columns(v))
    return torch.cat(cols, dim=-1)


def espirit_torch(kspace: np.ndarray | torch.Tensor, kernel_width: int | None = None, calib_size: int = 24,
                  threshold: float = 0.001, crop: float = 0.8, max_area: int | None = None,
                  power_iters: int = 30, num_maps: int = 1) -> torch.Tensor:
    """ESPIRiT maps (Uecker et al. 2014) computed in torch, without per-kernel image-domain FFTs.

    1. Calibration matrix ``A`` of all ``k x k x C`` patches of the fully sampled centre
       (``calibration_region``); its right singular vectors with ``s_i / s_0 > sqrt(threshold)``
       span the signal subspace; ``P = V V^H`` projects onto it.
    2. The image-domain ESPIRiT operator at pixel ``r`` is ``G(r) = (1/k^2) sum_i v_i(r) v_i(r)^H``
       with ``v_i(r)`` the inverse DFT of kernel ``i``. Its entries are trigonometric polynomials,
       ``G_cc'(r) = (1/k^2) sum_d R_cc'[d] e^{2 pi i d.r / N}`` with ``R_cc'[d]`` the sum of ``P``'s
       entries over patch offsets with difference ``d``: C^2 FFTs of size (H, W) instead of one per kernel.
    3. Per pixel, the eigenvector of ``G(r)`` with the largest eigenvalue is the map; pixels whose
       eigenvalue is below ``crop`` are set to zero. Phases are referred to the first principal
       component of the calibration data, so the maps vary smoothly.

    ``kernel_width`` defaults to 6 (as BART's ``ecalib``), reduced for calibration bands narrower than 9
    lines so that at least 4 kernel positions fit across them.
    ``kspace``: (C, H, W) complex, undersampled k-space with a fully sampled centre. Returns
    (C, H, W) complex64 maps with ``sum_c |S_c|^2 = 1`` inside the object, 0 outside.
    The eigenvector comes from ``power_iters`` power iterations, vectorised over pixels (a batched
    LAPACK call per 8x8 matrix is far slower on CPU). ``num_maps = M > 1`` returns (M, C, H, W): the
    M leading eigenvectors (orthogonal iteration), each cropped by its own eigenvalue (soft-SENSE).
    """
    k = torch.as_tensor(kspace)
    if k.ndim != 3:
        raise ValueError(f"coil k-space must have shape (coils, H, W), got {tuple(k.shape)}")
    if not bool(torch.isfinite(torch.view_as_real(k.to(torch.complex64))).all()):
        raise ValueError("coil k-space contains non-finite values")
    k = k.to(torch.complex64)
    c, h, w = k.shape
    sampled = (k.abs().sum(0) > 0).numpy()
    rows, cols = calibration_region(sampled, calib_size, max_area)
    calib = k[:, rows, cols]
    # default kernel 6 (BART's); narrower when the calibration band is thin, keeping at least 4 kernel
    # positions across it (with 3, too few equations: eigenvalues inside the object fall below ``crop``)
    kw = kernel_width if kernel_width is not None else max(3, min(6, min(calib.shape[1:]) - 3))
    if not 1 <= num_maps <= c:
        raise ValueError(f"num_maps must be between 1 and the number of coils ({c}), got {num_maps}")
    if calib.shape[1] < kw or calib.shape[2] < kw:
        raise ValueError(f"calibration region {tuple(calib.shape[1:])} is smaller than the kernel width {kw}")

    # 1. calibration matrix (positions, C*k*k) and its signal subspace
    patches = calib.unfold(1, kw, 1).unfold(2, kw, 1)  # (C, ny, nx, k, k)
    a = patches.permute(1, 2, 0, 3, 4).reshape(-1, c * kw * kw)
    gram = a.conj().T @ a
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    svals = evals.clamp_min(0).sqrt().flip(0)
    evecs = evecs.flip(1)
    n = int((svals / svals[0].clamp_min(1e-30) > np.sqrt(threshold)).sum())
    v = evecs[:, :n]  # columns index (c, py, px)
    proj = (v.conj() @ v.T).reshape(c, kw * kw, c, kw * kw).permute(0, 2, 1, 3).reshape(c, c, -1)

    # 2. lag sums R_cc'[d], d = p - q, then G(r) by one centred inverse FFT per coil pair
    py, px = np.divmod(np.arange(kw * kw), kw)
    lag = ((py[:, None] - py[None, :] + kw - 1) * (2 * kw - 1) + (px[:, None] - px[None, :] + kw - 1)).reshape(-1)
    lags = torch.zeros(c, c, (2 * kw - 1) ** 2, dtype=proj.dtype)
    lags.index_add_(2, torch.from_numpy(lag), proj)
    # lag d sits at index d mod N: the ifftshift of the centred layout, so a plain FFT suffices and
    # the pixel order stays unshifted until the maps are fftshifted at the end
    d = torch.arange(-(kw - 1), kw)
    grid = torch.zeros(c, c, h, w, dtype=proj.dtype)
    grid[:, :, (d % h)[:, None], (d % w)[None, :]] = lags.reshape(c, c, 2 * kw - 1, 2 * kw - 1)
    g = torch.fft.ifft2(grid, norm="ortho") * (np.sqrt(h * w) / (kw * kw))
    g = g.reshape(c * c, h * w)

    # 3. dominant eigenvector(s) per pixel, only where trace(G) >= crop (no eigenvalue can exceed it)
    trace = g[:: c + 1].real.sum(dim=0)
    keep = torch.nonzero(trace >= crop).squeeze(1)
    gk = g[:, keep].T.reshape(-1, c, c).contiguous()  # (P, C, C)
    # start from the columns of G with the largest diagonal entries (one free iteration)
    start = gk.diagonal(dim1=1, dim2=2).real.topk(num_maps, dim=1).indices  # (P, M)
    vec = torch.gather(gk, 2, start.unsqueeze(1).expand(-1, c, -1))  # (P, C, M)
    for it in range(power_iters):
        if num_maps > 1:
            vec = _orthonormal_columns(vec)
        elif it % 5 == 0:  # eigenvalues lie in [crop, 1]: renormalising every few steps is enough
            vec = _unit_columns(vec)
        vec = torch.bmm(gk, vec)
    vec = _orthonormal_columns(vec) if num_maps > 1 else _unit_columns(vec)
    lam = (vec.conj() * torch.bmm(gk, vec)).sum(dim=1).real  # (P, M) Rayleigh quotients

    # phase reference: the first principal component of the calibration data over coils
    coil_data = calib.reshape(c, -1)
    _, u = torch.linalg.eigh(coil_data @ coil_data.conj().T)
    ref = (u[:, -1].conj().view(1, c, 1) * vec).sum(dim=1, keepdim=True)  # (P, 1, M)
    vec = vec * (ref.conj() / ref.abs().clamp_min(1e-30))
    vec = torch.where((lam >= crop).unsqueeze(1), vec, torch.zeros((), dtype=vec.dtype))
    maps = torch.zeros(num_maps, c, h * w, dtype=vec.dtype)
    maps[:, :, keep] = vec.permute(2, 1, 0)
    maps = torch.fft.fftshift(maps.reshape(num_maps, c, h, w), dim=(-2, -1))
    return maps[0] if num_maps == 1 else maps
