"""CT acquisition geometries: parallel beam and fan beam (equiangular or flat detector).

Coordinates (all lengths in mm, angles in radians):

- The image is ``(ny, nx)`` pixels of side ``pixel_size``, centred on the isocentre. Pixel ``(i, j)`` has its
  centre at ``x_j = (j - (nx - 1) / 2) * pixel_size``, ``y_i = (i - (ny - 1) / 2) * pixel_size``
  (row index grows with y).
- At view angle ``theta`` let ``e = (cos theta, sin theta)`` and ``t = (-sin theta, cos theta)``.
- Parallel beam: the ray of detector coordinate ``u`` is the line ``{p : p . e = u}``, travelling along ``t``,
  so the sinogram is the Radon transform ``p(theta, u) = int f(x, y) delta(x cos theta + y sin theta - u)``.
- Fan beam: the source sits at ``S = -R t`` (``R`` = source-to-isocentre distance) and the detector faces it
  at distance ``D`` (source-to-detector) from the source, its axis along ``e``; the central ray travels along
  ``t``. Flat detector: element coordinate ``u`` (mm along the detector) is the point ``S + D t + u e``.
  Equiangular (curved, centred on the source): element ``u`` (mm of arc at distance ``D``) is at fan angle
  ``gamma = u / D`` and the ray direction is ``cos(gamma) t + sin(gamma) e``. As ``R`` grows the fan geometry
  tends to the parallel one with the same angle convention.
- Detector element ``k`` of ``n`` is at ``u_k = (k - (n - 1) / 2) * detector_spacing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _angles_tuple(angles: Any) -> tuple[float, ...]:
    arr = np.asarray(angles, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("geometry needs at least one view angle")
    if not np.all(np.isfinite(arr)):
        raise ValueError("view angles must be finite")
    return tuple(float(a) for a in arr)


@dataclass(frozen=True)
class _Geometry:
    angles: tuple[float, ...]
    num_detectors: int
    image_shape: tuple[int, int]
    detector_spacing: float = 1.0
    pixel_size: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "angles", _angles_tuple(self.angles))
        object.__setattr__(self, "image_shape", tuple(int(n) for n in self.image_shape))
        object.__setattr__(self, "num_detectors", int(self.num_detectors))
        if len(self.image_shape) != 2 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (ny, nx) with positive sizes, got {self.image_shape}")
        if self.num_detectors < 1:
            raise ValueError(f"num_detectors must be positive, got {self.num_detectors}")
        if not (self.detector_spacing > 0 and self.pixel_size > 0):
            raise ValueError("detector_spacing and pixel_size must be positive")

    @property
    def num_views(self) -> int:
        return len(self.angles)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return (self.num_views, self.num_detectors)

    def angles_array(self) -> np.ndarray:
        return np.asarray(self.angles, dtype=np.float64)

    def detector_coordinates(self) -> np.ndarray:
        """``u_k`` in mm (flat, parallel) or mm of arc (equiangular)."""
        return (np.arange(self.num_detectors) - (self.num_detectors - 1) / 2) * self.detector_spacing

    def fov_radius(self) -> float:
        """Radius (mm) of the circle circumscribing the image."""
        ny, nx = self.image_shape
        return 0.5 * math.hypot(ny, nx) * self.pixel_size


@dataclass(frozen=True)
class ParallelBeamGeometry(_Geometry):
    """Parallel-beam geometry. ``angles`` any set (sparse, limited arc), radians."""

    kind: str = field(default="parallel", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "parallel", "num_detectors": self.num_detectors, "detector_spacing": self.detector_spacing,
                "pixel_size": self.pixel_size, "image_shape": list(self.image_shape)}


@dataclass(frozen=True)
class FanBeamGeometry(_Geometry):
    """Fan-beam geometry with a flat or equiangular (arc) detector.

    ``source_to_isocenter`` (R) and ``source_to_detector`` (D) in mm; ``detector_spacing`` is mm along a flat
    detector or mm of arc at radius D for an equiangular one (angular pitch ``detector_spacing / D``).
    """

    source_to_isocenter: float = 500.0
    source_to_detector: float = 1000.0
    detector_type: str = "flat"
    kind: str = field(default="fan", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.detector_type not in ("flat", "equiangular"):
            raise ValueError(f"detector_type must be 'flat' or 'equiangular', got {self.detector_type!r}")
        if not self.source_to_detector >= self.source_to_isocenter > 0:
            raise ValueError("need source_to_detector >= source_to_isocenter > 0")
        if self.source_to_isocenter <= self.fov_radius():
            raise ValueError(f"source_to_isocenter {self.source_to_isocenter} mm lies inside the image "
                             f"(radius {self.fov_radius():.1f} mm)")

    def fan_angles(self) -> np.ndarray:
        """Fan angle ``gamma_k`` of each detector element (radians)."""
        u = self.detector_coordinates()
        if self.detector_type == "equiangular":
            return u / self.source_to_detector
        return np.arctan2(u, self.source_to_detector)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "fan", "detector_type": self.detector_type, "num_detectors": self.num_detectors,
                "detector_spacing": self.detector_spacing, "pixel_size": self.pixel_size,
                "image_shape": list(self.image_shape), "source_to_isocenter": self.source_to_isocenter,
                "source_to_detector": self.source_to_detector}


Geometry = ParallelBeamGeometry | FanBeamGeometry


def geometry_from_dict(d: dict[str, Any], angles: Any) -> Geometry:
    """Inverse of ``to_dict`` (plus the angles, which live beside the geometry)."""
    kind = str(d.get("type", "parallel"))
    common = {"angles": angles, "num_detectors": int(d["num_detectors"]),
              "image_shape": tuple(int(n) for n in d["image_shape"]),
              "detector_spacing": float(d.get("detector_spacing", 1.0)), "pixel_size": float(d.get("pixel_size", 1.0))}
    if kind == "parallel":
        return ParallelBeamGeometry(**common)
    if kind == "fan":
        return FanBeamGeometry(**common, source_to_isocenter=float(d["source_to_isocenter"]),
                               source_to_detector=float(d["source_to_detector"]),
                               detector_type=str(d.get("detector_type", "flat")))
    raise ValueError(f"unknown geometry type {kind!r} (expected 'parallel' or 'fan')")


def default_num_detectors(image_shape: tuple[int, int], pixel_size: float = 1.0, detector_spacing: float = 1.0,
                          source_to_isocenter: float | None = None, source_to_detector: float | None = None,
                          detector_type: str = "flat") -> int:
    """Detector count whose rays cover the circle circumscribing the image (e.g. 363 for 256x256 parallel)."""
    radius = 0.5 * math.hypot(*image_shape) * pixel_size
    if source_to_isocenter is None:
        return int(math.ceil(2 * radius / detector_spacing))
    half_fan = math.asin(min(radius / source_to_isocenter, 1.0))
    sdd = source_to_detector or source_to_isocenter
    half_width = sdd * (half_fan if detector_type == "equiangular" else math.tan(half_fan))
    return int(math.ceil(2 * half_width / detector_spacing)) + 2


def parallel_beam(image_size: int, views: int, arc_deg: float = 180.0, pixel_size: float = 1.0,
                  num_detectors: int | None = None, start_deg: float = 0.0) -> ParallelBeamGeometry:
    """Square image, ``views`` angles evenly spaced over ``arc_deg`` (end point excluded)."""
    angles = np.deg2rad(start_deg + np.arange(views) * (arc_deg / views))
    shape = (image_size, image_size)
    n_det = num_detectors or default_num_detectors(shape, pixel_size, pixel_size)
    return ParallelBeamGeometry(angles=angles, num_detectors=n_det, image_shape=shape, detector_spacing=pixel_size,
                                pixel_size=pixel_size)


def fan_beam(image_size: int, views: int, arc_deg: float = 360.0, pixel_size: float = 1.0,
             detector_type: str = "flat", source_to_isocenter: float | None = None,
             source_to_detector: float | None = None, num_detectors: int | None = None,
             start_deg: float = 0.0) -> FanBeamGeometry:
    """Square image in a fan beam: by default R = 2 x image width, D = 2 R, detector pitch = pixel size x D / R."""
    width = image_size * pixel_size
    r = source_to_isocenter or 2.0 * width
    d = source_to_detector or 2.0 * r
    spacing = pixel_size * d / r
    angles = np.deg2rad(start_deg + np.arange(views) * (arc_deg / views))
    shape = (image_size, image_size)
    n_det = num_detectors or default_num_detectors(shape, pixel_size, spacing, r, d, detector_type)
    return FanBeamGeometry(angles=angles, num_detectors=n_det, image_shape=shape, detector_spacing=spacing,
                           pixel_size=pixel_size, source_to_isocenter=r, source_to_detector=d,
                           detector_type=detector_type)
