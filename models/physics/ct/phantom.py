"""Ellipse and ellipsoid phantoms: rasterised images/volumes and exact parallel/fan-beam line integrals.

An ellipsoid is ``(value, x0, y0, z0, a, b, c, phi)``: additive value, centre and semi-axes in normalised
coordinates (the image spans [-1, 1] along x and y, the volume [-1, 1] along z), rotated by ``phi`` radians
about z. A 2D ellipse is the same with ``z0 = 0`` and ``c = inf``. Values add where ellipses overlap.

The line integral of a constant ellipse of value ``rho`` along the line ``P + s d`` (``|d| = 1``) is
``2 rho sqrt(Delta) / |d~|^2`` with, in ellipse-scaled coordinates ``P~``, ``d~``,
``Delta = (P~ . d~)^2 - |d~|^2 (|P~|^2 - 1)`` (zero when ``Delta < 0``), which gives exact sinograms.
"""

from __future__ import annotations

import math

import numpy as np

from models.physics.ct.geometry import Geometry
from models.physics.ct.projector import ray_parameters

# The modified Shepp-Logan head (Toft's contrast), with z extents after Kak & Slaney's 3D head:
# value, x0, y0, z0, a, b, c, phi (degrees)
_SHEPP_LOGAN_3D = [
    (1.0, 0.0, 0.0, 0.0, 0.69, 0.92, 0.90, 0.0),
    (-0.8, 0.0, -0.0184, 0.0, 0.6624, 0.874, 0.88, 0.0),
    (-0.2, 0.22, 0.0, -0.25, 0.11, 0.31, 0.41, -18.0),
    (-0.2, -0.22, 0.0, -0.25, 0.16, 0.41, 0.38, 18.0),
    (0.1, 0.0, 0.35, -0.25, 0.21, 0.25, 0.41, 0.0),
    (0.1, 0.0, 0.1, -0.25, 0.046, 0.046, 0.05, 0.0),
    (0.1, 0.0, -0.1, -0.25, 0.046, 0.046, 0.05, 0.0),
    (0.1, -0.08, -0.605, -0.25, 0.046, 0.023, 0.05, 0.0),
    (0.1, 0.0, -0.606, -0.25, 0.023, 0.023, 0.02, 0.0),
    (0.1, 0.06, -0.605, -0.25, 0.023, 0.046, 0.02, 0.0),
]


def shepp_logan_ellipsoids() -> np.ndarray:
    """``(10, 8)`` parameters of a 3D modified Shepp-Logan head (values 0..1, brain 0.2), phi in radians."""
    p = np.array(_SHEPP_LOGAN_3D, dtype=np.float64)
    p[:, 7] = np.deg2rad(p[:, 7])
    return p


def shepp_logan_ellipses() -> np.ndarray:
    """The 2D modified Shepp-Logan (the z = 0 section is not it: use these for 2D): ``(10, 8)``, c = inf."""
    p = shepp_logan_ellipsoids()
    p[:, 3], p[:, 6] = 0.0, np.inf
    return p


def rasterise(ellipsoids: np.ndarray, shape: tuple[int, int, int], z_range: tuple[float, float] = (-1.0, 1.0),
              supersample: int = 1) -> np.ndarray:
    """Volume ``(nz, ny, nx)`` float32 of the ellipsoids, pixel values averaged over ``supersample^2``
    sub-pixels in-plane (slices are sampled at their centres, evenly over ``z_range``)."""
    nz, ny, nx = shape
    ss = max(1, int(supersample))
    zs = np.linspace(z_range[0], z_range[1], nz) if nz > 1 else np.array([0.5 * (z_range[0] + z_range[1])])
    # sub-pixel centres in normalised coordinates: the image spans [-1, 1] edge to edge
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    xs = (((np.arange(nx)[:, None] + 0.5 + sub[None, :]) / nx) * 2 - 1).reshape(-1)
    ys = (((np.arange(ny)[:, None] + 0.5 + sub[None, :]) / ny) * 2 - 1).reshape(-1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    out = np.zeros((nz, ny * ss, nx * ss), dtype=np.float64)
    for value, x0, y0, z0, a, b, c, phi in ellipsoids:
        cp, sp = math.cos(phi), math.sin(phi)
        xr = (xx - x0) * cp + (yy - y0) * sp
        yr = -(xx - x0) * sp + (yy - y0) * cp
        r2 = (xr / a) ** 2 + (yr / b) ** 2
        for k, z in enumerate(zs):
            zr = 0.0 if math.isinf(c) else ((z - z0) / c) ** 2
            if zr <= 1.0:
                out[k] += value * (r2 + zr <= 1.0)
    out = out.reshape(nz, ny, ss, nx, ss).mean(axis=(2, 4))
    return out.astype(np.float32)


def ellipses_sinogram(ellipses: np.ndarray, geom: Geometry, z: float = 0.0) -> np.ndarray:
    """Exact line integrals ``(views, detectors)`` of the section at height ``z`` (normalised) of the
    ellipsoids, for an image of the geometry's size (normalised unit = half the image width in mm)."""
    ny, nx = geom.image_shape
    half_x, half_y = 0.5 * nx * geom.pixel_size, 0.5 * ny * geom.pixel_size
    point, direction = ray_parameters(geom)
    out = np.zeros(point.shape[:2], dtype=np.float64)
    for value, x0, y0, z0, a, b, c, phi in ellipses:
        scale = 1.0 if math.isinf(c) else 1.0 - ((z - z0) / c) ** 2
        if scale <= 0:
            continue
        a_mm, b_mm = a * half_x * math.sqrt(scale), b * half_y * math.sqrt(scale)
        cp, sp = math.cos(phi), math.sin(phi)
        px, py = point[..., 0] - x0 * half_x, point[..., 1] - y0 * half_y
        dx, dy = direction[..., 0], direction[..., 1]
        # rotate into the ellipse frame, then scale to the unit circle
        pu, pv = (px * cp + py * sp) / a_mm, (-px * sp + py * cp) / b_mm
        du, dv = (dx * cp + dy * sp) / a_mm, (-dx * sp + dy * cp) / b_mm
        dd = du**2 + dv**2
        pd = pu * du + pv * dv
        disc = pd**2 - dd * (pu**2 + pv**2 - 1.0)
        out += value * 2.0 * np.sqrt(np.clip(disc, 0.0, None)) / dd
    return out.astype(np.float32)
