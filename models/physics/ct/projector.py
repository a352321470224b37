"""Forward projection and its exact adjoint as sparse system matrices (Joseph's method).

Discretisation (Joseph 1982, ray-driven): each ray is sampled once per image column where it is closer to
horizontal (``|d_x| >= |d_y|``), else once per row. At each sample the image is linearly interpolated between
the two neighbouring pixels across the ray (zero outside the image) and the samples are summed with the step
length ``pixel_size / max(|d_x|, |d_y|)``, so the sinogram holds line integrals in the image's units times mm
(attenuation in 1/mm gives dimensionless projections).

The weights of all rays form a sparse matrix ``A`` of shape ``(views * detectors, ny * nx)``, built once per
geometry in float64, stored as float32 CSR and cached; the backprojection is ``A^T`` stored as its own CSR, so
the adjoint is exact up to float32 summation (dot-product test ~1e-7). Applying either is one sparse x dense
matmul with the slices as the dense columns, which batches over slices for free. Both directions are
differentiable (autograd uses the other matrix).

Large geometries (more than ``max_nnz`` non-zeros by ``nnz_bound``, e.g. 512 x 512 with more than 128 views) are
split by views into several such matrix pairs, each under the bound (CSR indices stay 32-bit and each build's
temporaries stay small). The pairs are built once, at the first use, and kept by the projector (and the last
such geometry is cached for the next projector of it), so iterative methods pay the build once: the forward is
the concatenation of the chunks' projections (the same numbers as one matrix gives), the adjoint the sum of the
chunks' backprojections (the same up to float32 summation order). Memory is about 16 bytes per non-zero, as for
one matrix; geometries above ``max_kept_nnz`` (one-off projections of very fine grids in the simulation) are
not kept but built chunk by chunk at every call, holding one chunk at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from models.physics.ct.geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry
from models.physics.linop import LinearOperator


def ray_parameters(geom: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """A point on each ray and its unit direction, both ``(views, detectors, 2)`` as (x, y), float64."""
    theta = geom.angles_array()[:, None]
    e = np.stack([np.cos(theta), np.sin(theta)], axis=-1)        # (V, 1, 2)
    t = np.stack([-np.sin(theta), np.cos(theta)], axis=-1)
    u = geom.detector_coordinates()[None, :, None]                 # (1, N, 1)
    if isinstance(geom, ParallelBeamGeometry):
        point = u * e
        direction = np.broadcast_to(t, point.shape)
    elif isinstance(geom, FanBeamGeometry):
        source = -geom.source_to_isocenter * t
        if geom.detector_type == "flat":
            direction = geom.source_to_detector * t + u * e
            direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
        else:
            gamma = u / geom.source_to_detector
            direction = np.cos(gamma) * t + np.sin(gamma) * e
        point = np.broadcast_to(source, direction.shape)
    else:
        raise TypeError(f"unsupported geometry {type(geom).__name__}")
    return np.ascontiguousarray(point), np.ascontiguousarray(direction)


def _joseph_entries(point: np.ndarray, direction: np.ndarray, ray_ids: np.ndarray, na: int, nb: int,
                    ps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Matrix rows, interpolation-axis index, stepping-axis index and weight of Joseph's method.

    ``point``/``direction`` are ``(R, 2)`` in (a, b) order: ``a`` is the stepping axis (``na`` samples),
    ``b`` the interpolation axis (``nb`` pixels). The caller passes (x, y) or, for steep rays, (y, x).
    """
    a = (np.arange(na) - (na - 1) / 2) * ps                        # sample positions along the stepping axis
    s = (a[None, :] - point[:, :1]) / direction[:, :1]             # ray parameter at each sample
    b = point[:, 1:2] + s * direction[:, 1:2]
    r = b / ps + (nb - 1) / 2                                      # continuous index on the interpolation axis
    i0 = np.floor(r)
    w1 = r - i0
    step = ps / np.abs(direction[:, 0:1])
    i0 = i0.astype(np.int64)
    jj = np.broadcast_to(np.arange(na)[None, :], i0.shape)
    rows = np.broadcast_to(ray_ids[:, None], i0.shape)
    out_rows, out_cols, out_vals = [], [], []
    for idx, w in ((i0, (1.0 - w1) * step), (i0 + 1, w1 * step)):
        ok = (idx >= 0) & (idx < nb) & (w > 0)
        out_rows.append(rows[ok])
        out_cols.append((idx[ok], jj[ok]))
        out_vals.append(w[ok])
    return (np.concatenate(out_rows), np.concatenate([c[0] for c in out_cols]),
            np.concatenate([c[1] for c in out_cols]), np.concatenate(out_vals))


def system_matrix_csr(geom: Geometry, chunk_rays: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joseph's system matrix as CSR arrays ``(crow int64, col int32, values float32)``.

    Rows are rays, ``view * detectors + detector``; columns are pixels, ``i * nx + j``, sorted within each row.
    Weights are computed in float64; each chunk of rays is sorted on its own, so no global sort is needed.
    """
    ny, nx = geom.image_shape
    n_pix = ny * nx
    ps = geom.pixel_size
    point, direction = ray_parameters(geom)
    point, direction = point.reshape(-1, 2), direction.reshape(-1, 2)
    n_rays = point.shape[0]
    counts = np.zeros(n_rays, dtype=np.int64)
    cols_all, vals_all = [], []
    for start in range(0, n_rays, chunk_rays):
        p, d = point[start:start + chunk_rays], direction[start:start + chunk_rays]
        rid = np.arange(p.shape[0])
        horiz = np.abs(d[:, 0]) >= np.abs(d[:, 1])
        vert = ~horiz
        # step along x and interpolate along y, or (steep rays) the reverse with the axes swapped
        rh, ih, jh, vh = _joseph_entries(p[horiz], d[horiz], rid[horiz], nx, ny, ps)
        rv, jv, iv, vv = _joseph_entries(p[vert][:, ::-1], d[vert][:, ::-1], rid[vert], ny, nx, ps)
        rows = np.concatenate([rh, rv])
        cols = np.concatenate([ih * nx + jh, iv * nx + jv])
        vals = np.concatenate([vh, vv])
        order = np.argsort(rows * n_pix + cols)
        cols_all.append(cols[order].astype(np.int32))
        vals_all.append(vals[order].astype(np.float32))
        counts[start:start + p.shape[0]] = np.bincount(rows, minlength=p.shape[0])
    crow = np.zeros(n_rays + 1, dtype=np.int64)
    np.cumsum(counts, out=crow[1:])
    return crow, np.concatenate(cols_all), np.concatenate(vals_all)


def build_system_matrices(geom: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, A^T)`` as float32 CSR tensors on the CPU (``system_matrices`` is the cached version)."""
    crow, cols, vals = system_matrix_csr(geom)
    n_rays = geom.num_views * geom.num_detectors
    n_pix = geom.image_shape[0] * geom.image_shape[1]
    if len(vals) >= 2**31 - 1:
        raise ValueError(f"system matrix too large ({len(vals)} non-zeros); use fewer views or a smaller image")
    crow_t, cols_t, vals_t = torch.from_numpy(crow), torch.from_numpy(cols), torch.from_numpy(vals)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
    a = torch.sparse_csr_tensor(crow_t.to(torch.int32), cols_t, vals_t, size=(n_rays, n_pix), check_invariants=False)
    # A^T: a stable sort of the column indices keeps each column's rows in increasing order
    _, perm = torch.sort(cols_t, stable=True)
    rows = torch.repeat_interleave(torch.arange(n_rays, dtype=torch.int32), crow_t.diff())
    crow_tr = torch.zeros(n_pix + 1, dtype=torch.int64)
    crow_tr[1:] = torch.cumsum(torch.bincount(cols_t.long(), minlength=n_pix), 0)
    at = torch.sparse_csr_tensor(crow_tr.to(torch.int32), rows[perm], vals_t[perm], size=(n_pix, n_rays),
                                 check_invariants=False)
    return a, at


@functools.lru_cache(maxsize=8)
def system_matrices(geom: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, A^T)`` as float32 CSR tensors on the CPU, cached per geometry (geometries are hashable)."""
    return build_system_matrices(geom)


class _SparseApply(torch.autograd.Function):
    """``M @ x`` for x ``(n, batch)``, with the gradient through the precomputed transpose ``Mt``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, m: torch.Tensor, mt: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.mt = mt
        return m @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.mt @ grad.contiguous(), None, None


def nnz_bound(geom: Geometry) -> int:
    """Upper bound of the system matrix's non-zeros: two per ray and step."""
    return 2 * geom.num_views * geom.num_detectors * max(geom.image_shape)


def view_subset(geom: Geometry, start: int, stop: int) -> Geometry:
    """The same geometry restricted to views ``start:stop``."""
    return dataclasses.replace(geom, angles=geom.angles[start:stop])


def view_chunks(geom: Geometry, max_nnz: int) -> list[tuple[int, int]] | None:
    """``(start, stop)`` view ranges whose matrices stay under ``max_nnz`` non-zeros (by ``nnz_bound``); None when
    the whole geometry does."""
    bound = nnz_bound(geom)
    if bound <= max_nnz:
        return None
    per_view = max(1, bound // geom.num_views)
    step = max(1, max_nnz // per_view)
    return [(v, min(geom.num_views, v + step)) for v in range(0, geom.num_views, step)]


Pairs = tuple[tuple[torch.Tensor, torch.Tensor], ...]


def build_chunk_matrices(geom: Geometry, chunks: tuple[tuple[int, int], ...]) -> Pairs:
    """``(A_k, A_k^T)`` of each view range (``chunked_system_matrices`` is the cached version)."""
    return tuple(build_system_matrices(view_subset(geom, a, b)) for a, b in chunks)


@functools.lru_cache(maxsize=1)  # one large geometry at a time: each may hold gigabytes
def chunked_system_matrices(geom: Geometry, chunks: tuple[tuple[int, int], ...]) -> Pairs:
    """``build_chunk_matrices``, cached for the last large geometry."""
    return build_chunk_matrices(geom, chunks)


MAX_NNZ = 2**26  # non-zeros of one matrix (about 1 GiB for A and A^T together)
MAX_KEPT_NNZ = 2**28  # non-zeros (by nnz_bound) of a chunked geometry whose matrices are kept (about 4 GiB at most)


class CTProjector(LinearOperator):
    """Forward projection ``(slices, ny, nx) -> (slices, views, detectors)`` and its exact adjoint.

    Leading dimensions are flattened, so ``(ny, nx)`` and ``(b, s, ny, nx)`` inputs work too. Works on any
    device and float dtype of the input (the matrices are moved/cast once and kept).
    Geometries whose matrix would exceed ``max_nnz`` non-zeros (bound: ``nnz_bound``; about 16 bytes each for
    ``A`` and ``A^T``) are applied in chunks of views, each with its own matrix pair, built once and kept
    (``keeps_matrices``); above ``max_kept_nnz`` the chunks are built at every call and not kept (bounded memory
    for one-off projections, e.g. the simulation's fine grids).
    """

    def __init__(self, geom: Geometry, max_nnz: int = MAX_NNZ, cache: bool = True, max_kept_nnz: int = MAX_KEPT_NNZ):
        self.geom = geom
        self._cache = cache
        self._mats: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._chunk_mats: dict[tuple[torch.device, torch.dtype], Pairs] = {}
        self._chunks = view_chunks(geom, max_nnz)
        self.keeps_matrices = self._chunks is None or nnz_bound(geom) <= max_kept_nnz

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.geom.image_shape

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return self.geom.sinogram_shape

    @property
    def chunks(self) -> list[tuple[int, int]] | None:
        """The view ranges the geometry is applied in, or None for one matrix."""
        return None if self._chunks is None else list(self._chunks)

    def matrices(self, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        key = (torch.device(device), dtype)
        if key not in self._mats:
            if self._chunks is not None:
                raise ValueError("this geometry is applied in chunks of views; it has no single system matrix "
                                 "(see chunk_matrices)")
            a, at = (system_matrices if self._cache else build_system_matrices)(self.geom)
            self._mats[key] = (a.to(device=key[0], dtype=dtype), at.to(device=key[0], dtype=dtype))
        return self._mats[key]

    def chunk_matrices(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Pairs:
        """``(A_k, A_k^T)`` per view chunk, built at the first call and kept (a chunked geometry that keeps its
        matrices only)."""
        if self._chunks is None or not self.keeps_matrices:
            raise ValueError("this geometry keeps no chunk matrices")
        key = (torch.device(device), dtype)
        if key not in self._chunk_mats:
            chunks = tuple(self._chunks)
            pairs = (chunked_system_matrices if self._cache else build_chunk_matrices)(self.geom, chunks)
            self._chunk_mats[key] = tuple((a.to(device=key[0], dtype=dtype), at.to(device=key[0], dtype=dtype))
                                          for a, at in pairs)
        return self._chunk_mats[key]

    def _pairs(self, x: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each chunk's matrices on ``x``'s device and dtype: the kept ones, or built one at a time."""
        if self.keeps_matrices:
            yield from self.chunk_matrices(x.device, x.dtype)
            return
        assert self._chunks is not None
        for a, b in self._chunks:
            m, mt = build_system_matrices(view_subset(self.geom, a, b))
            yield m.to(device=x.device, dtype=x.dtype), mt.to(device=x.device, dtype=x.dtype)

    @staticmethod
    def _check(x: torch.Tensor, in_shape: tuple[int, ...]) -> None:
        if tuple(x.shape[-len(in_shape):]) != in_shape:
            raise ValueError(f"expected trailing shape {in_shape}, got {tuple(x.shape)}")

    @staticmethod
    def _apply(x: torch.Tensor, m: torch.Tensor, mt: torch.Tensor, in_shape: tuple[int, ...],
               out_shape: tuple[int, ...]) -> torch.Tensor:
        lead = x.shape[:-len(in_shape)]
        cols = x.reshape(-1, math.prod(in_shape)).transpose(0, 1).contiguous()
        out = _SparseApply.apply(cols, m, mt)
        return out.transpose(0, 1).reshape(*lead, *out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self.image_shape)
        if self._chunks is None:
            a, at = self.matrices(x.device, x.dtype)
            return self._apply(x, a, at, self.image_shape, self.sinogram_shape)
        nd = self.geom.num_detectors
        parts = [self._apply(x, a, at, self.image_shape, (b - s, nd))
                 for (s, b), (a, at) in zip(self._chunks, self._pairs(x), strict=True)]
        return torch.cat(parts, dim=-2)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y, self.sinogram_shape)
        if self._chunks is None:
            a, at = self.matrices(y.device, y.dtype)
            return self._apply(y, at, a, self.sinogram_shape, self.image_shape)
        nd = self.geom.num_detectors
        out: torch.Tensor | None = None
        for (s, b), (a, at) in zip(self._chunks, self._pairs(y), strict=True):
            part = self._apply(y[..., s:b, :], at, a, (b - s, nd), self.image_shape)
            out = part if out is None else out + part
        assert out is not None
        return out

    def row_sums(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``A 1`` as a ``(views, detectors)`` tensor (the length of each ray inside the image)."""
        return self.forward(torch.ones(self.image_shape, device=device))

    def column_sums(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``A^T 1`` as a ``(ny, nx)`` tensor."""
        return self.adjoint(torch.ones(self.sinogram_shape, device=device))
