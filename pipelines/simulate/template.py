"""The ICBM152 2009 brain template packaged inside nilearn: the one loader of its files.

nilearn ships the template's T1 image and grey/white-matter probability maps (1 mm, 197 x 233 x 189, brain
extracted, values 0..255) as ``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``.
The MRI simulation (``pipelines.simulate.brain``) and the pseudo-CT brain (``pipelines.simulate.ct``) both read
them here. nilearn is located without being imported (importing it pulls in scikit-learn and is slow).

It is one brain: every dataset simulated from it shows the same anatomy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from pipelines.data import InputError

MAPS = ("t1", "gm", "wm")
FILE_NAME = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
INSTALL = "pip install 'recon-service[data]'"
SOURCE = "ICBM152 brain template"


def _nilearn_package() -> Path | None:
    """Where the nilearn package is installed, or None."""
    try:
        spec = importlib.util.find_spec("nilearn")
    except (ImportError, ValueError):  # a broken or half-removed installation
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def template_dir() -> Path:
    """nilearn's packaged data folder; ``InputError`` naming what to install when nilearn is missing."""
    package = _nilearn_package()
    if package is None:
        raise InputError(SOURCE, f"brain simulation needs the template packaged with nilearn, which is not "
                                 f"installed ({INSTALL})")
    return package / "datasets" / "data"


def template_path(key: str) -> Path:
    """The NIfTI file of map ``key`` (one of :data:`MAPS`)."""
    if key not in MAPS:
        raise ValueError(f"unknown template map {key!r}; choose one of {', '.join(MAPS)}")
    return template_dir() / FILE_NAME.format(key)


def load_icbm152() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The template's maps ``{"t1", "gm", "wm"}`` as float32 arrays in NIfTI axis order ``(x, y, z)`` with
    their stored values (0..255), and their common voxel-to-RAS (MNI mm) affine.

    Not cached: callers keep what they derive from it. ``InputError`` naming what to install when nilearn or
    a template file is missing or unreadable."""
    import nibabel as nib

    maps: dict[str, np.ndarray] = {}
    affines: dict[str, np.ndarray] = {}
    for key in MAPS:
        path = template_path(key)
        if not path.is_file():
            raise InputError(path, f"{SOURCE} file missing from the nilearn installation (reinstall it: {INSTALL})")
        try:
            image = nib.load(str(path))
            maps[key] = np.asarray(image.get_fdata(dtype=np.float32))
        except Exception as err:  # nibabel raises several types for a damaged file
            raise InputError(path, f"unreadable {SOURCE} file ({err}); reinstall nilearn ({INSTALL})") from err
        affines[key] = np.asarray(image.affine, dtype=np.float64)
    if not all(np.array_equal(affines["t1"], a) and maps["t1"].shape == maps[k].shape for k, a in affines.items()):
        raise InputError(SOURCE, "the t1, gm and wm maps do not share one grid")
    return maps, affines["t1"]
