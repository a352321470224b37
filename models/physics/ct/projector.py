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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

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


class CTProjector(LinearOperator):
    """Forward projection ``(slices, ny, nx) -> (slices, views, detectors)`` and its exact adjoint.

    Leading dimensions are flattened, so ``(ny, nx)`` and ``(b, s, ny, nx)`` inputs work too. Works on any
    device and float dtype of the input (the matrices are moved/cast once and kept).
    Geometries whose matrix would exceed ``max_nnz`` non-zeros (bound: ``nnz_bound``; about 16 bytes each for
    ``A`` and ``A^T``) are applied in chunks of views whose matrices are built on the fly and not kept: bounded
    memory, rebuilt at every call, so meant for one-off projections (simulation), not iterative loops.
    """

    def __init__(self, geom: Geometry, max_nnz: int = 2**26, cache: bool = True):
        self.geom = geom
        self._cache = cache
        self._mats: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        bound = nnz_bound(geom)
        self._chunks: list[tuple[int, int]] | None = None
        if bound > max_nnz:
            per_view = max(1, bound // geom.num_views)
            step = max(1, max_nnz // per_view)
            self._chunks = [(v, min(geom.num_views, v + step)) for v in range(0, geom.num_views, step)]

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.geom.image_shape

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return self.geom.sinogram_shape

    def matrices(self, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        key = (torch.device(device), dtype)
        if key not in self._mats:
            if self._chunks is not None:
                raise ValueError("this geometry is applied in chunks of views; it has no single system matrix")
            a, at = (system_matrices if self._cache else build_system_matrices)(self.geom)
            self._mats[key] = (a.to(device=key[0], dtype=dtype), at.to(device=key[0], dtype=dtype))
        return self._mats[key]

    def _apply(self, x: torch.Tensor, transpose: bool, in_shape: tuple[int, ...],
               out_shape: tuple[int, ...]) -> torch.Tensor:
        if tuple(x.shape[-len(in_shape):]) != in_shape:
            raise ValueError(f"expected trailing shape {in_shape}, got {tuple(x.shape)}")
        lead = x.shape[:-len(in_shape)]
        a, at = self.matrices(x.device, x.dtype)
        m, mt = (at, a) if transpose else (a, at)
        cols = x.reshape(-1, math.prod(in_shape)).transpose(0, 1).contiguous()
        out = _SparseApply.apply(cols, m, mt)
        return out.transpose(0, 1).reshape(*lead, *out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._chunks is None:
            return self._apply(x, False, self.image_shape, self.sinogram_shape)
        parts = [CTProjector(view_subset(self.geom, a, b), max_nnz=2**62, cache=False).forward(x)
                 for a, b in self._chunks]
        return torch.cat(parts, dim=-2)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self._chunks is None:
            return self._apply(y, True, self.sinogram_shape, self.image_shape)
        out = None
        for a, b in self._chunks:
            part = CTProjector(view_subset(self.geom, a, b), max_nnz=2**62, cache=False).adjoint(y[..., a:b, :])
            out = part if out is None else out + part
        return out

    def row_sums(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``A 1`` as a ``(views, detectors)`` tensor (the length of each ray inside the image)."""
        return self.forward(torch.ones(self.image_shape, device=device))

    def column_sums(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``A^T 1`` as a ``(ny, nx)`` tensor."""
        return self.adjoint(torch.ones(self.sinogram_shape, device=device))
