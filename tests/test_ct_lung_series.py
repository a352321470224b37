"""benchmarks/ct_lung_series.py: NRRD volumes read with their geometry, written as DICOM CT series that the
service's reader gives back unchanged, and an archive whose checksum differs refused before use."""

from __future__ import annotations

import gzip
import importlib.util
import io
import tarfile

import numpy as np
import pytest
from conftest import ROOT

from pipelines.io.dicom_ct import read_dicom_ct


def _module():
    spec = importlib.util.spec_from_file_location("ct_lung_series", ROOT / "benchmarks" / "ct_lung_series.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nrrd(volume: np.ndarray, *, encoding: str = "gzip", space: str = "left-posterior-superior",
          dimension: int = 3) -> bytes:
    nz, ny, nx = volume.shape
    header = (f"NRRD0004\n# written by the test\ntype: short\ndimension: {dimension}\nspace: {space}\n"
              f"sizes: {nx} {ny} {nz}\nspace directions: (0.75,0,0) (0,0.75,0) (0,0,2.5)\nkinds: domain domain "
              f"domain\nendian: little\nencoding: {encoding}\nspace origin: (-10,-20.5,-300)\n\n").encode()
    payload = volume.astype("<i2").tobytes()
    return header + (gzip.compress(payload) if encoding == "gzip" else payload)


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=(5, 12, 16)).astype(np.int16)


@pytest.mark.parametrize("encoding", ["gzip", "raw"])
def test_nrrd_volume_is_read_with_its_geometry_in_ras(tmp_path, encoding):
    hu = _volume(0)
    path = tmp_path / "v.nrrd"
    path.write_bytes(_nrrd(hu, encoding=encoding))
    volume = _module().read_nrrd(path)
    np.testing.assert_array_equal(volume.data, hu.astype(np.float32))
    assert volume.attrs["units"] == "HU"
    # voxel (i, j, k) lies at LPS origin + (0.75 i, 0.75 j, 2.5 k); RAS flips the first two axes
    i, j, k = 3, 7, 4
    lps = np.array([-10 + 0.75 * i, -20.5 + 0.75 * j, -300 + 2.5 * k])
    np.testing.assert_allclose((volume.affine @ [i, j, k, 1])[:3], lps * [-1, -1, 1])


def test_nrrd_reader_names_the_file_and_what_it_does_not_read(tmp_path):
    read_nrrd = _module().read_nrrd
    cases = {"2d.nrrd": (_nrrd(_volume(1), dimension=2), "dimension 2"),
             "scanner.nrrd": (_nrrd(_volume(1), space="scanner-xyz"), "space 'scanner-xyz' is not read"),
             "short.nrrd": (_nrrd(_volume(1))[:-40], "damaged gzip data"),
             "cut.nrrd": (_nrrd(_volume(1), encoding="raw")[:-40], "cut.nrrd: 940 samples, sizes 16 x 12 x 5 need 960"),
             "plain.txt": (b"hello\n\nworld", "not an NRRD file")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_nrrd(tmp_path / name)


def _archive(path, module, volumes: dict[str, np.ndarray]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, hu in volumes.items():
            data = _nrrd(hu)
            info = tarfile.TarInfo(module.VOLUMES[name])
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_series_are_written_once_and_read_back_unchanged(tmp_path, monkeypatch):
    module = _module()
    volumes = {"lung1": _volume(2), "lung2": _volume(3)}
    archive = tmp_path / "sdist.tar.gz"
    _archive(archive, module, volumes)
    monkeypatch.setattr(module, "SDIST_SHA256", __import__("hashlib").sha256(archive.read_bytes()).hexdigest())
    folders = module.lung_series(tmp_path / "series", archive=archive)
    for name, hu in volumes.items():
        series = read_dicom_ct(folders[name])
        assert len(list(folders[name].glob("*.dcm"))) == hu.shape[0]
        np.testing.assert_array_equal(series.data, hu.astype(np.float32))
        np.testing.assert_allclose(series.affine, module.read_nrrd_bytes(_nrrd(hu)).affine, atol=1e-6)
    assert not list((tmp_path / "series").glob(".*")), "no staging folder or NRRD left behind"
    # complete series are not rewritten, and need no archive
    stamp = {p: p.stat().st_mtime_ns for p in folders["lung1"].iterdir()}
    archive.unlink()
    assert module.lung_series(tmp_path / "series", archive=archive) == folders
    assert {p: p.stat().st_mtime_ns for p in folders["lung1"].iterdir()} == stamp


def test_an_archive_with_another_checksum_is_refused_before_use(tmp_path):
    module = _module()
    archive = tmp_path / "pyradiomics-3.1.0.tar.gz"
    _archive(archive, module, {"lung1": _volume(4), "lung2": _volume(5)})
    with pytest.raises(ValueError, match="pyradiomics-3.1.0.tar.gz: SHA-256 .* expected 24722c96"):
        module.lung_series(tmp_path / "series", archive=archive)
    assert not (tmp_path / "series" / "lung1").exists()
