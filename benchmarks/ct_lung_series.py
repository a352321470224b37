"""Real chest CT volumes as DICOM CT series, for the DDS benchmark's out-of-distribution series.

No public CT series can be downloaded here, but the Python package index holds one source: pyradiomics 3.1.0's
source distribution ships two chest CT volumes as test data, ``data/lung1_image.nrrd`` (512 x 512 x 48) and
``data/lung2_image.nrrd`` (512 x 512 x 61), both in HU, 5 mm slices. ``lung_series`` fetches that file (pinned by
SHA-256), reads the two volumes and writes each as a DICOM CT series with the service's own writer, so the
benchmark reads them back through ``pipelines.io.dicom_ct`` as a user's series would be read.

NRRD (teem.sourceforge.net/nrrd/format.html) is read only as far as those files need: a 3D attached volume,
``raw`` or ``gzip`` encoding, integer or float samples, a ``space`` of left-posterior-superior or
right-anterior-superior with ``space directions`` and ``space origin``. Index ``(i, j, k)`` (``i`` fastest) lies at
``origin + i d0 + j d1 + k d2`` in that space.

    PYTHONPATH=. python benchmarks/ct_lung_series.py data/ct-lung   # fetch and write the two series
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

from pipelines.data import ImageVolume
from pipelines.io.dicom_series import Provenance, write_dicom_series
from pipelines.io.dicom_study import StudyInfo

SDIST_URL = ("https://files.pythonhosted.org/packages/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4"
             "578f2/pyradiomics-3.1.0.tar.gz")
SDIST_SHA256 = "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"
VOLUMES = {"lung1": "pyradiomics-3.1.0/data/lung1_image.nrrd", "lung2": "pyradiomics-3.1.0/data/lung2_image.nrrd"}

_TYPES = {"short": "i2", "int16": "i2", "signed short": "i2", "ushort": "u2", "unsigned short": "u2",
          "uint16": "u2", "int": "i4", "int32": "i4", "float": "f4", "double": "f8", "uchar": "u1",
          "unsigned char": "u1", "uint8": "u1"}
_TO_RAS = {"left-posterior-superior": np.array([-1.0, -1.0, 1.0]),
           "right-anterior-superior": np.array([1.0, 1.0, 1.0])}


def _vector(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.strip().strip("()").split(",")], dtype=np.float64)


def read_nrrd(path: str | Path) -> ImageVolume:
    """A 3D NRRD file (module docstring) as a ``(z, y, x)`` float32 ``ImageVolume`` with a voxel -> RAS mm
    affine and ``attrs["units"] = "HU"``. Raises ``ValueError`` naming the file for what it does not read."""
    return read_nrrd_bytes(Path(path).read_bytes(), str(path))


def read_nrrd_bytes(raw: bytes, path: str = "<nrrd>") -> ImageVolume:
    """``read_nrrd`` of a file's content; ``path`` names it in errors."""
    header_end = raw.find(b"\n\n")
    if not raw.startswith(b"NRRD") or header_end < 0:
        raise ValueError(f"{path}: not an NRRD file with an attached header")
    fields: dict[str, str] = {}
    for line in raw[:header_end].decode("ascii").splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    if "data file" in fields or "datafile" in fields:
        raise ValueError(f"{path}: detached data files are not read")
    if fields.get("dimension") != "3":
        raise ValueError(f"{path}: dimension {fields.get('dimension')}, only 3D volumes are read")
    kind = _TYPES.get(fields.get("type", "").lower())
    if kind is None:
        raise ValueError(f"{path}: sample type {fields.get('type')!r} is not read")
    space = fields.get("space", "").lower()
    if space not in _TO_RAS:
        raise ValueError(f"{path}: space {space!r} is not read (left-posterior-superior or right-anterior-superior)")
    encoding = fields.get("encoding", "").lower()
    payload = raw[header_end + 2:]
    if encoding in ("gzip", "gz"):
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: damaged gzip data ({err})") from err
    elif encoding != "raw":
        raise ValueError(f"{path}: encoding {encoding!r} is not read (raw or gzip)")
    endian = "<" if fields.get("endian", "little") == "little" else ">"
    nx, ny, nz = (int(v) for v in fields["sizes"].split())
    data = np.frombuffer(payload, dtype=endian + kind)
    if data.size != nx * ny * nz:
        raise ValueError(f"{path}: {data.size} samples, sizes {nx} x {ny} x {nz} need {nx * ny * nz}")
    directions = [_vector(d) for d in fields["space directions"].replace(") (", ")|(").split("|")]
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = directions
    affine[:3, 3] = _vector(fields.get("space origin", "(0,0,0)"))
    affine[:3] *= _TO_RAS[space][:, None]
    return ImageVolume(data.reshape(nz, ny, nx).astype(np.float32), affine, {"units": "HU", "modality": "CT"})


def _fetch(archive: Path) -> None:
    part = archive.with_name(archive.name + ".part")
    print(f"fetching {SDIST_URL}", file=sys.stderr)
    with urllib.request.urlopen(SDIST_URL, timeout=120) as response, open(part, "wb") as out:
        shutil.copyfileobj(response, out)
    part.replace(archive)


def _check_archive(archive: Path) -> None:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise ValueError(f"{archive}: SHA-256 {digest}, expected {SDIST_SHA256} (pyradiomics-3.1.0.tar.gz); "
                         f"delete it to fetch it again")


def lung_series(root: str | Path, archive: str | Path | None = None) -> dict[str, Path]:
    """The DICOM CT series of ``lung1`` and ``lung2`` under ``root``, written where missing.

    ``archive``: the pyradiomics 3.1.0 sdist (default ``root/pyradiomics-3.1.0.tar.gz``, fetched from PyPI when
    absent); its SHA-256 is checked before use. Each series is written aside and moved into place when complete.
    """
    root = Path(root)
    out = {name: root / name for name in VOLUMES}
    missing = [name for name, d in out.items() if not d.is_dir()]
    if not missing:
        return out
    root.mkdir(parents=True, exist_ok=True)
    archive = Path(archive) if archive is not None else root / "pyradiomics-3.1.0.tar.gz"
    if not archive.exists():
        _fetch(archive)
    _check_archive(archive)
    with tarfile.open(archive) as tar:
        for name in missing:
            member = tar.extractfile(VOLUMES[name])
            if member is None:
                raise ValueError(f"{archive}: no {VOLUMES[name]}")
            volume = read_nrrd_bytes(member.read(), f"{archive}:{VOLUMES[name]}")
            partial = root / f".{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            study = StudyInfo(patient_name=f"pyradiomics^{name}", patient_id=name,
                              study_description=f"pyradiomics 3.1.0 test case {name} (chest CT)")
            write_dicom_series(volume, partial, "CT", study, Provenance(method="source volume"),
                               series_description=f"{name} chest CT (pyradiomics test data)")
            partial.replace(out[name])
    return out


if __name__ == "__main__":
    for series_name, folder in lung_series(sys.argv[1] if len(sys.argv) > 1 else "data/ct-lung").items():
        print(f"{series_name}: {folder} ({len(list(folder.glob('*.dcm')))} files)")
