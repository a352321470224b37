"""Sparse-view CT acquisitions with ground truth: phantoms, a pseudo-CT brain, any CT volume a user gives.

Units. References are linear attenuation coefficients in 1/mm, non-negative, so that fastMRI-style metrics
(PSNR with data range = target max) apply: ``mu = MU_WATER * (1 + HU / 1000)``, clipped at 0, with
``MU_WATER = 0.0193 / mm`` (water at about 70 keV). Sinograms are dimensionless line integrals
(``int mu dl``, lengths in mm). Slices are isotropic: slice spacing = pixel size = field of view / size.

Sources:

- ``shepp-logan``: the 3D modified Shepp-Logan head (``models.physics.ct.phantom``), values mapped to HU
  (0.2 -> 0 HU, 1.0 -> 1000 HU inside the head, air outside), FOV 256 mm; one volume, z in [-0.5, 0.5].
  Sinograms are exact line integrals of the ellipse sections (no discretisation of the forward model).
- ``ellipsoids``: random ellipsoids (soft tissue body, inner structures from -300 to +400 HU, a few bone-like
  ones), exact line integrals as above; 3 volumes (seeds ``seed``, ``seed + 1``, ``seed + 2``).
- ``brain``: a pseudo-CT built from the ICBM152 2009 tissue maps packaged in nilearn (1 mm): HU = 40 GM +
  25 WM + 8 CSF (CSF = brain mask - GM - WM), then by distance outside the brain 2 mm CSF, 6 mm skull
  (1000 HU), 4 mm scalp (40 HU), air. FOV 256 mm centred on the MNI origin; 3 axial slabs of ``slices``
  contiguous slices centred at z = -10, +15 and +40 mm MNI.
  Shepp-Logan slabs are centred at normalised z = -0.25 (its small features), ellipsoids at 0.
- ``brain-test`` / ``brain-tuning``: the CT diffusion prior's held-out test slab (MNI z 10..73 mm) and its tuning
  slab (z -63..0 mm), 64 axial slices 1 mm apart (the central ``slices`` of them), 1 volume each;
  ``brain-gap-low`` / ``brain-gap-high``: the 9 slices (z 1..9 and 74..82 mm) between the test slab and the
  prior's training ranges, which the test slab does not hold and no training slice is centred in.
- a path: a DICOM CT series (directory or file) or a NIfTI CT volume in HU; in-plane resampled to ``size`` over
  the larger in-plane extent, the central ``slices`` slices (1 volume).

Volumes given as images (brain, user data) are projected from a 2x finer in-plane grid (bilinear upsampling,
projector with half the pixel size and the same detector), so reconstruction with the ``size`` grid does not
commit the "inverse crime". Noise: Poisson counts at incident photon count ``I0`` per ray,
``y = -log(max(Poisson(I0 exp(-p)), 1) / I0)`` (a ray with no photon counts as one).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from models.physics.ct.geometry import (
    FanBeamGeometry,
    Geometry,
    ParallelBeamGeometry,
    fan_beam,
    parallel_beam,
)
from models.physics.ct.phantom import ellipses_sinogram, rasterise, shepp_logan_ellipsoids
from models.physics.ct.projector import CTProjector
from pipelines.ct_units import MU_WATER, hu_to_mu
from pipelines.data import CTAcquisition, ImageVolume, InputError
from pipelines.io.sinogram import write_sinogram
from pipelines.simulate.template import load_icbm152

PHANTOM_FOV_MM = 256.0
BRAIN_FOV_MM = 256.0
BRAIN_SLAB_CENTRES_MM = (-10.0, 15.0, 40.0)
NUM_ELLIPSOID_VOLUMES = 3
# the CT prior's held-out test slab and its tuning slab (pipelines.simulate.prior_slices): 64 slices 1 mm apart;
# the two gaps between the test slab and the training ranges (-72..0, 83..95), 9 slices each, which the test slab
# does not hold and no training slice is centred in (benchmarks/ct_ood_calibrate.py calibrates DDS's flag on the
# tuning slab and the lower gap, and scores the upper one)
PRIOR_SLABS = {"brain-test": (10.0, 73.0), "brain-tuning": (-63.0, 0.0), "brain-gap-low": (1.0, 9.0),
               "brain-gap-high": (74.0, 82.0)}

Progress = Callable[[int, int], None]


def _slice_heights(slices: int, z_range: tuple[float, float]) -> np.ndarray:
    return np.linspace(z_range[0], z_range[1], slices) if slices > 1 else np.array([0.5 * sum(z_range)])


# ---- ellipsoid phantoms ------------------------------------------------------------------------------------

def shepp_logan_hu_ellipsoids() -> np.ndarray:
    """Shepp-Logan ellipsoids with values in HU deltas (0.2 -> 0 HU, 1.0 -> 1000 HU) plus air at -1000."""
    p = shepp_logan_ellipsoids().copy()
    p[:, 0] *= 1250.0
    # the outer ellipsoid takes the head from air (-1000 HU) to 1000 HU: value 1.0 -> 1000 HU, 0.2 -> 0 HU
    p[0, 0] = 2000.0
    return p


def random_ellipsoids(seed: int, count: int = 12) -> np.ndarray:
    """A soft-tissue body (40 HU over air) with ``count`` random inner ellipsoids (HU deltas)."""
    rng = np.random.default_rng(seed)
    # inner ellipsoids reach at most 0.3 + 0.25 from the centre, inside the body's smallest semi-axis 0.7
    body = [1040.0, 0.0, 0.0, 0.0, rng.uniform(0.8, 0.9), rng.uniform(0.7, 0.85), 1.5, rng.uniform(-0.3, 0.3)]
    rows = [body]
    for k in range(count):
        a, b = rng.uniform(0.04, 0.25, size=2)
        c = rng.uniform(0.1, 0.6)
        radius = rng.uniform(0, 0.3)
        angle = rng.uniform(0, 2 * math.pi)
        value = rng.uniform(600, 1000) if k < 2 else rng.uniform(-300, 400)
        rows.append([value, radius * math.cos(angle), radius * math.sin(angle), rng.uniform(-0.2, 0.2),
                     a, b, c, rng.uniform(0, math.pi)])
    return np.array(rows, dtype=np.float64)


def _ellipsoid_volume(ellipsoids_hu: np.ndarray, size: int, slices: int, z_range: tuple[float, float],
                      geom: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Reference mu volume (pixel-averaged, 4x4 supersampling) and exact sinograms of ``HU + 1000`` sections."""
    hu = rasterise(ellipsoids_hu, (slices, size, size), z_range=z_range, supersample=4) - 1000.0
    mu = hu_to_mu(hu)
    # line integrals of mu = MU_WATER * (HU + 1000) / 1000 are linear in the ellipsoid values (clipping aside)
    scaled = ellipsoids_hu.copy()
    scaled[:, 0] *= MU_WATER / 1000.0
    sino = np.stack([ellipses_sinogram(scaled, geom, z) for z in _slice_heights(slices, z_range)])
    return mu, sino.astype(np.float32)


# ---- pseudo-CT brain ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PseudoCTTissue:
    """HU of each tissue of the pseudo-CT brain and the shells outside it (distances in mm from the brain)."""

    gm: float = 40.0
    wm: float = 25.0
    csf: float = 8.0
    csf_shell_mm: float = 2.0   # CSF-like layer between brain and skull
    skull_mm: float = 8.0       # skull up to this distance
    skull: float = 1000.0
    scalp_mm: float = 12.0      # scalp up to this distance, air beyond
    scalp: float = 40.0


@functools.lru_cache(maxsize=1)
def brain_components() -> tuple[np.ndarray, np.ndarray]:
    """The pseudo-CT brain's parts on the ICBM152 1 mm grid, NIfTI axis order ``(x, y, z)``: an array
    ``(4, x, y, z)`` of grey matter and white matter fractions (0..1), the brain mask (0/1) and the distance
    outside the brain (mm), and the grid's affine (MNI mm). ``InputError`` naming what to install when the
    template (nilearn, the 'data' extra) is missing."""
    maps, affine = load_icbm152()
    brain = maps["t1"] > 0
    outside = ndimage.distance_transform_edt(~brain)  # mm on the 1 mm grid
    parts = np.stack([maps["gm"] / 255.0, maps["wm"] / 255.0, brain, outside]).astype(np.float32)
    return parts, affine


def pseudo_ct_hu(parts: torch.Tensor, tissue: PseudoCTTissue = PseudoCTTissue()) -> torch.Tensor:
    """HU from the parts of ``brain_components`` stacked on dimension 0 (any trailing shape; a fractional
    brain mask mixes the two sides): inside, ``gm GM + wm WM + csf CSF`` with ``csf = clip(brain - gm - wm)``;
    outside, by distance from the brain, CSF, skull, scalp, then air (-1000). ``tissue``'s fields may be
    tensors that broadcast against one part (one set of tissue values per slice of a batch)."""
    gm, wm, brain, dist = parts[0], parts[1], parts[2], parts[3]
    csf = torch.clamp(brain - gm - wm, 0.0, 1.0)
    inside = tissue.gm * gm + tissue.wm * wm + tissue.csf * csf

    def value(v: float | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(v, dtype=dist.dtype, device=dist.device)

    outside = torch.where(dist <= value(tissue.scalp_mm), value(tissue.scalp), value(-1000.0))
    outside = torch.where(dist <= value(tissue.skull_mm), value(tissue.skull), outside)
    outside = torch.where(dist <= value(tissue.csf_shell_mm), value(tissue.csf), outside)
    return brain * inside + (1.0 - brain) * outside


@functools.lru_cache(maxsize=1)
def brain_pseudo_ct() -> tuple[np.ndarray, np.ndarray]:
    """HU volume on the ICBM152 1 mm grid, NIfTI axis order ``(x, y, z)``, and its affine (MNI mm).
    ``InputError`` naming what to install when the template (nilearn, the 'data' extra) is missing."""
    parts, affine = brain_components()
    return pseudo_ct_hu(torch.from_numpy(parts)).numpy().astype(np.float32), affine


def _resample(hu: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, shape: tuple[int, int, int],
              fill: float) -> np.ndarray:
    """Resample an ``(x, y, z)``-ordered volume onto the ``(z, y, x)`` grid of ``dst_affine`` (linear)."""
    nz, ny, nx = shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    vox = np.stack([i, j, k, np.ones_like(i)]).reshape(4, -1).astype(np.float64)
    src = np.linalg.solve(src_affine, dst_affine @ vox)[:3]
    out = ndimage.map_coordinates(hu, src, order=1, mode="constant", cval=fill)
    return out.reshape(shape).astype(np.float32)


def brain_volume(size: int, slices: int, z_centre_mm: float, upsample: int = 1,
                 slice_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-CT brain slab in HU ``(slices, size * upsample, size * upsample)`` and the affine of the
    ``(slices, size, size)`` grid (pixel size BRAIN_FOV_MM / size; slice spacing ``slice_mm``, default the pixel
    size)."""
    hu, src_affine = brain_pseudo_ct()
    ps = BRAIN_FOV_MM / size
    dz = ps if slice_mm is None else float(slice_mm)
    affine = np.diag([ps, ps, dz, 1.0])
    affine[:3, 3] = [-(size - 1) / 2 * ps, -(size - 1) / 2 * ps, z_centre_mm - (slices - 1) / 2 * dz]
    fine = affine.copy()
    if upsample > 1:  # in-plane sub-grid with the same field of view
        fine[0, 0] = fine[1, 1] = ps / upsample
        fine[:2, 3] = -(size * upsample - 1) / 2 * (ps / upsample)
    return _resample(hu, src_affine, fine, (slices, size * upsample, size * upsample), -1000.0), affine


# ---- user volumes --------------------------------------------------------------------------------------------

def load_user_volume(path: Path) -> ImageVolume:
    """A DICOM CT series (directory or file) or a NIfTI volume (values taken as HU)."""
    from pipelines.io.dicom_ct import read_dicom_ct
    from pipelines.io.nifti import read_nifti

    if not path.exists():
        raise InputError(path, "no such file or directory (source must be shepp-logan, ellipsoids, brain or a path)")
    if path.is_file() and path.name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    return read_dicom_ct(path)


def user_volume(volume: ImageVolume, size: int, slices: int, upsample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Central ``slices`` slices, in-plane resampled to a square ``size`` grid covering the larger extent.
    Returns HU ``(slices, size * upsample, size * upsample)`` and the affine of the ``size`` grid."""
    data = np.asarray(volume.data, dtype=np.float32)
    nz, ny, nx = data.shape
    k0 = max(0, (nz - slices) // 2)
    data = data[k0:k0 + slices]
    n_sl = data.shape[0]
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)  # (dx, dy, dz) mm per voxel index
    fov = max(nx * spacing[0], ny * spacing[1])

    def grid(n: int, k_offset: int) -> np.ndarray:
        # voxel (i', j', k') of an n x n grid -> source voxel (i, j, k): same centre, pixel fov / n
        m = np.eye(4)
        m[0, 0], m[1, 1] = (fov / n) / spacing[0], (fov / n) / spacing[1]
        m[0, 3] = (nx - 1) / 2 - (n - 1) / 2 * m[0, 0]
        m[1, 3] = (ny - 1) / 2 - (n - 1) / 2 * m[1, 1]
        m[2, 3] = k_offset
        return m

    n_fine = size * upsample
    k, j, i = np.meshgrid(np.arange(n_sl), np.arange(n_fine), np.arange(n_fine), indexing="ij")
    vox = np.stack([i, j, k, np.ones_like(i)]).reshape(4, -1).astype(np.float64)
    src = (grid(n_fine, 0) @ vox)[:3]
    xyz = data.transpose(2, 1, 0)
    hu = ndimage.map_coordinates(xyz, src, order=1, mode="constant", cval=-1000.0).reshape(n_sl, n_fine, n_fine)
    return hu.astype(np.float32), volume.affine @ grid(size, k0)


# ---- projection and noise ------------------------------------------------------------------------------------

def make_geometry(geometry: str, size: int, views: int, arc_deg: float | None, pixel_size: float,
                  fan_detector: str = "flat") -> Geometry:
    """The acquisition geometry the simulator uses: parallel (default arc 180 deg) or fan (default 360 deg)."""
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if geometry == "parallel":
        return parallel_beam(size, views, 180.0 if arc_deg is None else arc_deg, pixel_size)
    if geometry == "fan":
        return fan_beam(size, views, 360.0 if arc_deg is None else arc_deg, pixel_size, detector_type=fan_detector)
    raise ValueError(f"geometry must be 'parallel' or 'fan', got {geometry!r}")


def _fine_geometry(geom: Geometry, upsample: int) -> Geometry:
    ny, nx = geom.image_shape
    common = {"angles": geom.angles, "num_detectors": geom.num_detectors, "detector_spacing": geom.detector_spacing,
              "image_shape": (ny * upsample, nx * upsample), "pixel_size": geom.pixel_size / upsample}
    if isinstance(geom, ParallelBeamGeometry):
        return ParallelBeamGeometry(**common)
    assert isinstance(geom, FanBeamGeometry)
    return FanBeamGeometry(**common, source_to_isocenter=geom.source_to_isocenter,
                           source_to_detector=geom.source_to_detector, detector_type=geom.detector_type)


def project_volume(mu_fine: np.ndarray, geom: Geometry, upsample: int) -> np.ndarray:
    """Sinograms of a volume given on the ``upsample``-times finer in-plane grid."""
    op = CTProjector(_fine_geometry(geom, upsample) if upsample > 1 else geom)
    with torch.no_grad():
        return op.forward(torch.from_numpy(np.ascontiguousarray(mu_fine, dtype=np.float32))).numpy()


def add_poisson_noise(sinogram: np.ndarray, i0: float, rng: np.random.Generator) -> np.ndarray:
    """Post-log Poisson noise: ``-log(max(Poisson(I0 exp(-p)), 1) / I0)``."""
    if not i0 > 0:
        raise ValueError(f"incident photon count must be positive, got {i0}")
    counts = rng.poisson(i0 * np.exp(-np.clip(sinogram, 0.0, None).astype(np.float64)))
    return (-np.log(np.maximum(counts, 1) / i0)).astype(np.float32)


def _downsample(x: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return x
    s, ny, nx = x.shape
    return x.reshape(s, ny // factor, factor, nx // factor, factor).mean(axis=(2, 4))


# ---- the dataset -------------------------------------------------------------------------------------------

def simulate_ct_dataset(out_dir: Path, views: int, arc_deg: float | None = None, geometry: str = "parallel",
                        noise_i0: float | None = None, source: str = "shepp-logan", size: int = 128,
                        slices: int = 16, seed: int = 0, progress: Progress | None = None,
                        fan_detector: str = "flat") -> list[Path]:
    """Write one sinogram HDF5 file per volume into ``out_dir`` and return their paths.

    ``arc_deg=None`` means 180 degrees for parallel beam and 360 for fan beam; views are evenly spaced over the
    arc (end point excluded). Volumes: shepp-logan 1, ellipsoids 3, brain 3 slabs, a path 1 (module docstring).
    Each file holds the noisy (if ``noise_i0``) sinogram, the angles, the geometry and the reference mu volume.
    """
    out_dir = Path(out_dir)
    if size < 8 or slices < 1:
        raise ValueError(f"size must be >= 8 and slices >= 1, got size={size}, slices={slices}")
    rng = np.random.default_rng(seed)
    upsample = 2
    if source in ("shepp-logan", "ellipsoids"):
        pixel_size = PHANTOM_FOV_MM / size
        jobs = [("shepp-logan", 0)] if source == "shepp-logan" else \
            [("ellipsoids", seed + k) for k in range(NUM_ELLIPSOID_VOLUMES)]
    elif source == "brain":
        pixel_size = BRAIN_FOV_MM / size
        jobs = [("brain", k) for k in range(len(BRAIN_SLAB_CENTRES_MM))]
    elif source in PRIOR_SLABS:
        pixel_size = BRAIN_FOV_MM / size
        jobs = [(source, 0)]
    else:
        user = load_user_volume(Path(source))
        jobs = [("user", 0)]
    geom: Geometry | None = None
    paths: list[Path] = []
    for n, (kind, key) in enumerate(jobs):
        attrs: dict = {"source": source, "attenuation_units": "1/mm", "mu_water_per_mm": MU_WATER,
                       "noise_i0": noise_i0, "seed": seed, "simulated": True}
        if kind in ("shepp-logan", "ellipsoids"):
            geom = make_geometry(geometry, size, views, arc_deg, pixel_size, fan_detector)
            ell = shepp_logan_hu_ellipsoids() if kind == "shepp-logan" else random_ellipsoids(key)
            # isotropic voxels: slices 2 / size apart in normalised units, around the phantom's detailed part
            centre = -0.25 if kind == "shepp-logan" else 0.0
            half = (slices - 1) / size
            z_range = (centre - half, centre + half)
            mu, sino = _ellipsoid_volume(ell, size, slices, z_range, geom)
            affine = np.diag([pixel_size, pixel_size, pixel_size, 1.0])
            affine[:3, 3] = -0.5 * pixel_size * np.array([size - 1, size - 1, slices - 1])
            name = kind if kind == "shepp-logan" else f"ellipsoids-{n + 1:02d}"
            attrs["phantom_seed"] = key
        else:
            if kind == "brain":
                hu_fine, affine = brain_volume(size, slices, BRAIN_SLAB_CENTRES_MM[key], upsample)
                attrs["slab_centre_mm"] = BRAIN_SLAB_CENTRES_MM[key]
                name = f"brain-{key + 1:02d}"
            elif kind in PRIOR_SLABS:
                lo, hi = PRIOR_SLABS[kind]
                n = min(slices, int(round(hi - lo)) + 1)  # the central ``slices`` of the 1 mm slab
                centre = (lo + hi) / 2
                hu_fine, affine = brain_volume(size, n, centre, upsample, slice_mm=1.0)
                attrs["slab_centre_mm"], attrs["slice_mm"] = centre, 1.0
                name = kind
            else:
                hu_fine, affine = user_volume(user, size, slices, upsample)
                name = Path(source).name.split(".")[0] or "volume"
            pixel_size = float(np.linalg.norm(affine[:3, 0]))
            geom = make_geometry(geometry, size, views, arc_deg, pixel_size, fan_detector)
            mu_fine = hu_to_mu(hu_fine)
            sino = project_volume(mu_fine, geom, upsample)
            mu = _downsample(mu_fine, upsample)
        if noise_i0 is not None:
            sino = add_poisson_noise(sino, noise_i0, rng)
        acq = CTAcquisition(sinogram=sino.astype(np.float32), angles=geom.angles_array(), geometry=geom.to_dict(),
                            reference=mu.astype(np.float32), affine=affine, attrs=attrs)
        paths.append(write_sinogram(out_dir / f"{name}.h5", acq))
        if progress:
            progress(n + 1, len(jobs))
    return paths


__all__ = ["MU_WATER", "add_poisson_noise", "brain_pseudo_ct", "brain_volume", "hu_to_mu", "make_geometry",
           "random_ellipsoids", "simulate_ct_dataset"]
