import copy
import random

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from pipelines.data import InputError
from pipelines.io.dicom_ct import read_dicom_ct

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")


def test_ct_small_in_hounsfield_units_with_affine():
    ds = pydicom.dcmread(CT_SMALL)
    vol = read_dicom_ct(CT_SMALL)
    assert vol.data.shape == (1, 128, 128) and vol.data.dtype == np.float32
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(vol.data[0], expected)
    assert float(ds.RescaleIntercept) == -1024  # so HU differ from the stored values
    # voxel (i=column, j=row) -> RAS: LPS position with x and y negated
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    i, j = 10, 20
    lps = ipp + i * dc * np.array([1.0, 0, 0]) + j * dr * np.array([0, 1.0, 0])
    ras = vol.affine @ np.array([i, j, 0, 1.0])
    assert np.allclose(ras[:3], lps * np.array([-1, -1, 1]))
    assert vol.attrs["units"] == "HU"
    assert vol.affine[2, 2] == pytest.approx(5.0)  # single slice: SliceThickness along the normal


def _series(tmp_path, n=6, spacing=2.5, orientation=(1, 0, 0, 0, 1, 0), skip=(), mutate=None, name="s"):
    """A series made from CT_small: slice k has stored values offset by 10 k; positions along the normal."""
    template = pydicom.dcmread(CT_SMALL)
    base = template.pixel_array.copy()
    series_uid = generate_uid()
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    origin = np.array([-80.0, -90.0, 30.0])
    paths = []
    folder = tmp_path / name
    folder.mkdir()
    for k in range(n):
        if k in skip:
            continue
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * spacing * normal]
        ds.PixelData = (base + 10 * k).astype(np.int16).tobytes()
        ds.RescaleSlope = 2
        if mutate:
            mutate(k, ds)
        path = folder / f"img{random.Random(k).randint(0, 10**6):07d}_{k}.dcm"
        ds.save_as(path)
        paths.append(path)
    return folder, paths, origin, normal


def test_series_sorted_along_normal_regardless_of_file_order(tmp_path):
    folder, paths, origin, normal = _series(tmp_path)
    base = pydicom.dcmread(CT_SMALL).pixel_array.astype(np.float32)
    shuffled = list(paths)
    random.Random(3).shuffle(shuffled)
    for source in (folder, shuffled):
        vol = read_dicom_ct(source)
        assert vol.data.shape == (6, 128, 128)
        for k in range(6):  # slope 2, intercept -1024
            assert np.array_equal(vol.data[k], (base + 10 * k) * 2 - 1024)
        # the affine's k axis is the slice step, and voxel (0, 0, k) sits at slice k's position (RAS)
        for k in (0, 5):
            assert np.allclose(vol.affine @ [0, 0, k, 1], np.r_[(origin + 2.5 * k * normal) * [-1, -1, 1], 1],
                               atol=1e-3)


def test_oblique_sagittal_series(tmp_path):
    orientation = (0, 1, 0, 0, 0, -1)  # sagittal: rows along +y, columns along -z; normal = -x
    folder, paths, origin, normal = _series(tmp_path, n=4, spacing=1.5, orientation=orientation)
    vol = read_dicom_ct(list(reversed(paths)))
    assert np.allclose(normal, [-1, 0, 0])
    assert np.allclose(vol.affine[:3, 2], np.array([1.5, 0, 0]))  # -x in LPS is +x in RAS
    assert np.allclose(vol.affine[:3, 0], np.array([0, -0.661468, 0]), atol=1e-6)


def test_missing_slice_is_reported(tmp_path):
    folder, *_ = _series(tmp_path, n=6, skip=(3,))
    with pytest.raises(InputError, match="missing slice"):
        read_dicom_ct(folder)


def test_mixed_series_are_reported(tmp_path):
    folder, *_ = _series(tmp_path, mutate=lambda k, ds: setattr(ds, "SeriesInstanceUID", generate_uid())
                         if k == 4 else None, name="uid")
    with pytest.raises(InputError, match="mixed series: SeriesInstanceUID"):
        read_dicom_ct(folder)

    def tilt(k, ds):
        if k == 2:
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "0.9950042", "0.0998334"]
    folder, *_ = _series(tmp_path, mutate=tilt, name="tilt")
    with pytest.raises(InputError, match="ImageOrientationPatient differs"):
        read_dicom_ct(folder)

    def small(k, ds):
        if k == 1:
            ds.Rows, ds.Columns = 64, 64
            ds.PixelData = np.zeros((64, 64), np.int16).tobytes()
    folder, *_ = _series(tmp_path, mutate=small, name="size")
    with pytest.raises(InputError, match="image size"):
        read_dicom_ct(folder)


def test_duplicate_positions_are_reported(tmp_path):
    folder, *_ = _series(tmp_path, n=3, mutate=lambda k, ds: setattr(ds, "ImagePositionPatient", ["0", "0", "0"]))
    with pytest.raises(InputError, match="duplicate slice position"):
        read_dicom_ct(folder)


def test_not_ct_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="modality is MR, not CT") as info:
        read_dicom_ct(MR_SMALL)
    assert "MR_small.dcm" in str(info.value)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00\x01 definitely not DICOM" * 10)
    with pytest.raises(InputError, match="DICOM") as info:
        read_dicom_ct(junk)
    assert "junk.dcm" in str(info.value)
    with pytest.raises(InputError, match="file not found"):
        read_dicom_ct(tmp_path / "missing.dcm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        read_dicom_ct(tmp_path / "empty")
