"""Training slices for the CT diffusion prior: augmented axial slices of the pseudo-CT brain or of user volumes.

Each slice is drawn from a 3D volume by a random rigid-plus-scale transform (rotation about z up to
``rotate_deg``, tilts up to ``tilt_deg``, scale ``1 +- scale``, in-plane shift up to ``shift_mm``), a smooth
random in-plane displacement (``warp_mm``) and a random left-right flip, sampled on a grid twice as fine as
the output and averaged 2 x 2 (partial volume, no aliasing). The pseudo-CT brain's tissues also get random
HU (``random_tissue``) and random skull and scalp thicknesses, so one template gives many synthetic subjects.
It is still one brain: results that rest on it say so.

Slices are returned in the prior's units, ``HU / 1000`` (air -1, water 0, bone about 1).

The brain's training slices come from ``TRAIN_Z_MM`` (MNI z, mm): the skull base to the basal ganglia, and the
vertex. Between them, 10 mm from each, lies the held-out test slab (``TEST_SLAB_Z_MM``, 64 slices 1 mm apart:
the lateral ventricles to the upper cortex), which no training slice comes near. The tuning slab
(``TUNING_SLAB_Z_MM``, for the methods' settings) lies inside the training range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.simulate.ct import PRIOR_SLABS  # noqa: E402 - one place for the slabs

TRAIN_Z_MM = ((-72.0, 0.0), (83.0, 95.0))
TEST_SLAB_Z_MM = PRIOR_SLABS["brain-test"]
TUNING_SLAB_Z_MM = PRIOR_SLABS["brain-tuning"]
HU_SCALE = 1000.0  # prior units = HU / HU_SCALE


@dataclass(frozen=True)
class Augment:
    rotate_deg: float = 15.0
    tilt_deg: float = 3.0
    scale: float = 0.1
    shift_mm: float = 10.0
    warp_mm: float = 3.0
    flip: bool = True


NO_AUGMENT = Augment(0.0, 0.0, 0.0, 0.0, 0.0, False)


def random_tissue(g: torch.Generator, n: int) -> object:
    """``n`` random sets of pseudo-CT tissue HU and shell thicknesses around the template's values, as
    ``(n, 1, 1)`` tensors."""
    from pipelines.simulate.ct import PseudoCTTissue

    u = torch.rand(8, n, 1, 1, generator=g, device=g.device)
    shell = 1.0 + 2.0 * u[3]
    skull = shell + 4.0 + 4.0 * u[4]
    return PseudoCTTissue(gm=34.0 + 12.0 * u[0], wm=20.0 + 10.0 * u[1], csf=2.0 + 10.0 * u[2], csf_shell_mm=shell,
                          skull_mm=skull, skull=700.0 + 800.0 * u[5], scalp_mm=skull + 2.0 + 4.0 * u[6],
                          scalp=20.0 + 40.0 * u[7])


@dataclass
class SourceVolume:
    """Channels ``(C, z, y, x)`` (torch), the voxel-to-mm affine of index order ``(x, y, z)``, the z ranges (mm)
    slices may be centred in, and how channels become HU (``render(channels, generator)``)."""

    channels: torch.Tensor
    affine: np.ndarray
    z_ranges_mm: tuple[tuple[float, float], ...]
    render: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    centre_mm: tuple[float, float] = (0.0, 0.0)  # in-plane (x, y) centre of the slices (the brain: MNI origin)


def brain_source(device: str | torch.device = "cpu", z_ranges_mm: tuple[tuple[float, float], ...] = TRAIN_Z_MM,
                 randomise_tissue: bool = True) -> SourceVolume:
    """The pseudo-CT brain (its four parts as channels), training z range by default."""
    from pipelines.simulate.ct import PseudoCTTissue, brain_components, pseudo_ct_hu

    parts, affine = brain_components()
    channels = torch.from_numpy(np.ascontiguousarray(parts.transpose(0, 3, 2, 1))).to(device)

    def render(ch: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        tissue = random_tissue(g, ch.shape[0]) if randomise_tissue else PseudoCTTissue()
        return pseudo_ct_hu(ch.transpose(0, 1), tissue)

    return SourceVolume(channels, affine, tuple(z_ranges_mm), render)


def user_sources(paths: list[Path], device: str | torch.device = "cpu") -> list[SourceVolume]:
    """DICOM CT series or NIfTI volumes (values in HU), all their slices used."""
    from pipelines.simulate.ct import load_user_volume

    sources = []
    for path in paths:
        vol = load_user_volume(path)
        data = np.asarray(vol.data, dtype=np.float32)  # (z, y, x)
        # ImageVolume affines map (x, y, z) voxel indices to mm
        z_mm = [float((vol.affine @ np.array([0, 0, k, 1.0]))[2]) for k in (0, data.shape[0] - 1)]
        mid = vol.affine @ np.array([(data.shape[2] - 1) / 2, (data.shape[1] - 1) / 2, 0.0, 1.0])
        sources.append(SourceVolume(torch.from_numpy(data[None]).to(device), np.asarray(vol.affine, np.float64),
                                    ((min(z_mm), max(z_mm)),), lambda ch, g: ch[:, 0], (float(mid[0]), float(mid[1]))))
    return sources


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=g.device, dtype=torch.float64)


def _heights(g: torch.Generator, n: int, ranges: tuple[tuple[float, float], ...]) -> torch.Tensor:
    """``n`` heights uniform over the union of ``ranges``."""
    lengths = np.array([hi - lo for lo, hi in ranges])
    u = _uniform(g, n, 0.0, float(lengths.sum()))
    z = torch.empty_like(u)
    start = 0.0
    for (lo, _hi), length in zip(ranges, lengths, strict=True):
        hit = (u >= start) & (u <= start + length)
        z[hit] = lo + (u[hit] - start)
        start += length
    return z


def slice_grid(n: int, size: int, pixel_mm: float, z_mm: torch.Tensor, augment: Augment,
               g: torch.Generator) -> torch.Tensor:
    """Points (mm, ``(n, 2 size, 2 size, 3)`` as x, y, z) of ``n`` randomly transformed axial slices centred
    on the volume's origin in-plane and at heights ``z_mm``."""
    dev = g.device
    fine = 2 * size
    step = pixel_mm / 2
    c = (torch.arange(fine, device=dev, dtype=torch.float64) - (fine - 1) / 2) * step
    v, u = torch.meshgrid(c, c, indexing="ij")  # v along y (rows), u along x (columns)
    pts = torch.stack([u, v, torch.zeros_like(u)], dim=-1).expand(n, fine, fine, 3).clone()
    if augment.warp_mm > 0:  # smooth displacement: a 5 x 5 random field upsampled
        coarse = torch.randn(n, 2, 5, 5, generator=g, device=dev, dtype=torch.float64) * augment.warp_mm / 2
        field = F.interpolate(coarse, size=(fine, fine), mode="bicubic", align_corners=True)
        pts[..., :2] += field.permute(0, 2, 3, 1)
    if augment.flip:
        sign = torch.where(torch.rand(n, generator=g, device=dev) < 0.5, -1.0, 1.0).to(torch.float64)
        pts[..., 0] *= sign[:, None, None]
    s = 1.0 + _uniform(g, n, -augment.scale, augment.scale)
    pts = pts * s[:, None, None, None]
    a = torch.deg2rad(_uniform(g, n, -augment.rotate_deg, augment.rotate_deg))
    bx = torch.deg2rad(_uniform(g, n, -augment.tilt_deg, augment.tilt_deg))
    by = torch.deg2rad(_uniform(g, n, -augment.tilt_deg, augment.tilt_deg))
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rz = torch.stack([torch.stack([a.cos(), -a.sin(), zero], -1), torch.stack([a.sin(), a.cos(), zero], -1),
                      torch.stack([zero, zero, one], -1)], -2)
    rx = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, bx.cos(), -bx.sin()], -1),
                      torch.stack([zero, bx.sin(), bx.cos()], -1)], -2)
    ry = torch.stack([torch.stack([by.cos(), zero, by.sin()], -1), torch.stack([zero, one, zero], -1),
                      torch.stack([-by.sin(), zero, by.cos()], -1)], -2)
    rot = rx @ ry @ rz
    pts = torch.einsum("nij,nhwj->nhwi", rot, pts)
    shift = torch.stack([_uniform(g, n, -augment.shift_mm, augment.shift_mm),
                         _uniform(g, n, -augment.shift_mm, augment.shift_mm), z_mm.to(torch.float64)], -1)
    return pts + shift[:, None, None, :]


def sample_points(source: SourceVolume, pts_mm: torch.Tensor) -> torch.Tensor:
    """The source's channels at points ``(n, h, w, 3)`` (mm): ``(n, C, h, w)``, trilinear, zero outside
    (the brain's distance channel: outside reads as far, i.e. air)."""
    ch = source.channels
    inv = torch.as_tensor(np.linalg.inv(source.affine), dtype=torch.float64, device=pts_mm.device)
    idx = pts_mm @ inv[:3, :3].T + inv[:3, 3]  # (x, y, z) voxel indices
    sizes = torch.tensor([ch.shape[3], ch.shape[2], ch.shape[1]], dtype=torch.float64, device=pts_mm.device)
    norm = 2 * idx / (sizes - 1).clamp(min=1) - 1
    thin = sizes == 1  # a one-slice volume: the slice holds half a voxel either side
    norm = torch.where(thin, 2 * idx, norm).to(ch.dtype)
    n, h, w, _ = norm.shape
    out = F.grid_sample(ch[None], norm.reshape(1, n, h, w, 3), mode="bilinear", padding_mode="border",
                        align_corners=True)[0]  # (C, n, h, w)
    inside = ((norm.abs() <= 1).all(-1)).to(ch.dtype)  # (n, h, w)
    return out.permute(1, 0, 2, 3), inside


class PriorSlices:
    """Random augmented training slices ``(n, 1, size, size)`` in prior units from one or more sources."""

    def __init__(self, sources: list[SourceVolume], size: int = 128, pixel_mm: float = 2.0,
                 augment: Augment = Augment()):
        if not sources:
            raise ValueError("no training volumes")
        if size < 8 or not pixel_mm > 0:
            raise ValueError(f"size must be >= 8 and pixel_mm > 0, got {size}, {pixel_mm}")
        self.sources, self.size, self.pixel_mm, self.augment = sources, size, pixel_mm, augment

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        which = torch.randint(len(self.sources), (n,), generator=g, device=g.device).cpu().numpy()
        out = torch.empty(n, 1, self.size, self.size, device=self.sources[0].channels.device)
        for k, source in enumerate(self.sources):
            rows = np.flatnonzero(which == k)
            if rows.size:
                z = _heights(g, rows.size, source.z_ranges_mm)
                out[torch.as_tensor(rows, device=out.device)] = self.render(source, z, self.augment, g)
        return out

    def render(self, source: SourceVolume, z_mm: torch.Tensor, augment: Augment, g: torch.Generator) -> torch.Tensor:
        pts = slice_grid(len(z_mm), self.size, self.pixel_mm, z_mm, augment, g)
        pts[..., 0] += source.centre_mm[0]
        pts[..., 1] += source.centre_mm[1]
        ch, inside = sample_points(source, pts)
        hu = source.render(ch, g)
        hu = torch.where(inside > 0, hu, torch.full_like(hu, -1000.0))
        hu = F.avg_pool2d(hu[:, None], 2)
        return (hu / HU_SCALE).clamp(-1.0, 3.0)


def fixed_slices(source: SourceVolume, z_mm: np.ndarray, size: int = 128, pixel_mm: float = 2.0) -> torch.Tensor:
    """Unaugmented axial slices at heights ``z_mm`` (validation and test): ``(len(z), 1, size, size)``."""
    g = torch.Generator(source.channels.device).manual_seed(0)
    sampler = PriorSlices([source], size, pixel_mm, NO_AUGMENT)
    return sampler.render(source, torch.as_tensor(np.asarray(z_mm, np.float64), device=g.device), NO_AUGMENT, g)


def slab_heights(z_range_mm: tuple[float, float], spacing_mm: float = 1.0) -> np.ndarray:
    """Slice heights from the range's start to its end, ``spacing_mm`` apart."""
    count = int(math.floor((z_range_mm[1] - z_range_mm[0]) / spacing_mm + 1e-9)) + 1
    return z_range_mm[0] + spacing_mm * np.arange(count)


__all__ = ["Augment", "NO_AUGMENT", "PriorSlices", "SourceVolume", "TEST_SLAB_Z_MM", "TRAIN_Z_MM",
           "TUNING_SLAB_Z_MM", "brain_source", "fixed_slices", "random_tissue", "replace", "slab_heights",
           "user_sources"]
