from functools import partial

import h5py
import ismrmrd
import numpy as np
import pytest
import torch
from input_errors import expect_input_error

from models.classical.mri import zero_filled
from models.physics.mri.masks import equispaced_column_mask
from pipelines.data import InputError, MRIAcquisition
from pipelines.io.fastmri import make_ismrmrd_header, read_fastmri, write_fastmri
from pipelines.io.mrd_header import parse_ismrmrd_header


def _fft2c(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _ifft2c(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _crandn(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _acquisition(slices=3, coils=4, h=32, w=24, recon=(32, 20), seed=0) -> MRIAcquisition:
    sm = equispaced_column_mask(w, 4, 0.25, seed=seed)
    kspace = (_crandn((slices, coils, h, w), seed) * sm.mask).astype(np.complex64)
    rng = np.random.default_rng(seed + 1)
    affine = np.array([[0.0, -0.9, 0.1, 12.0], [-0.8, 0.0, 0.0, -3.5], [0.0, 0.05, 3.0, 40.0], [0, 0, 0, 1]])
    return MRIAcquisition(kspace=kspace, mask=sm.mask, num_low_frequencies=sm.num_low_frequencies, recon_shape=recon,
                          reference=rng.random((slices, *recon)).astype(np.float32), affine=affine,
                          attrs={"acquisition": "CORPD_FBK", "patient_id": "p-001", "acceleration": 4,
                                 "contrast": "PD"})


def test_write_read_round_trip_is_exact(tmp_path):
    acq = _acquisition()
    path = write_fastmri(tmp_path / "sub" / "vol.h5", acq)
    out = read_fastmri(path)
    assert out.kspace.dtype == np.complex64
    np.testing.assert_array_equal(out.kspace, acq.kspace)
    np.testing.assert_array_equal(out.mask, acq.mask)
    np.testing.assert_array_equal(out.reference, acq.reference)
    np.testing.assert_array_equal(out.affine, acq.affine)
    assert out.recon_shape == acq.recon_shape
    assert out.num_low_frequencies == acq.num_low_frequencies
    for key in ("acquisition", "patient_id", "acceleration", "contrast"):
        assert out.attrs[key] == acq.attrs[key]
    assert out.attrs["max"] == pytest.approx(float(acq.reference.max()))
    assert out.attrs["norm"] == pytest.approx(float(np.linalg.norm(acq.reference)), rel=1e-6)
    assert out.attrs["num_low_frequencies"] == acq.num_low_frequencies
    assert out.source == str(path)
    # the made header is schema-valid and describes the data
    header = ismrmrd.xsd.CreateFromDocument(out.header_xml)
    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (32, 24)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (32, 20)
    # affine column 1 (row index, H) and column 0 (column index, W) give the pixel sizes
    assert enc.reconSpace.fieldOfView_mm.x == pytest.approx(np.hypot(0.9, 0.05) * 32)
    assert enc.reconSpace.fieldOfView_mm.y == pytest.approx(0.8 * 20)
    assert header.subjectInformation.patientID == "p-001"
    # writing what was read gives the same file contents again
    out2 = read_fastmri(write_fastmri(tmp_path / "again.h5", out))
    np.testing.assert_array_equal(out2.kspace, acq.kspace)
    assert out2.header_xml == out.header_xml


def test_make_ismrmrd_header_is_schema_valid_and_parses_back():
    xml = make_ismrmrd_header((640, 368, 1), (320, 320, 1), (160.0, 160.0, 3.0), num_coils=15, num_slices=35,
                              acceleration=4, ky_center=180, patient_id="x")
    header = ismrmrd.xsd.CreateFromDocument(xml)
    assert header.encoding[0].encodedSpace.fieldOfView_mm.x == pytest.approx(320.0)
    assert header.encoding[0].encodedSpace.fieldOfView_mm.y == pytest.approx(160.0 * 368 / 320)
    assert header.encoding[0].parallelImaging.accelerationFactor.kspace_encoding_step_1 == 4
    assert header.acquisitionSystemInformation.receiverChannels == 15
    info = parse_ismrmrd_header(xml)
    assert info.encoded_matrix == (640, 368, 1) and info.recon_matrix == (320, 320, 1)
    assert info.limits["kspace_encoding_step_1"].center == 180
    assert info.limits["slice"].maximum == 34
    assert info.recon_pixel_mm == pytest.approx((0.5, 0.5, 3.0))
    assert info.trajectory == "cartesian" and info.acceleration == (4, 1)
    with pytest.raises(ValueError):
        make_ismrmrd_header((64, 32), (32, 32), (0.0, 200.0))


def _smooth_image(h, w, seed):
    """A band-limited complex test image, so its content can sit in a sub-window exactly."""
    y, x = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.complex128)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.3 * w, 0.7 * w), rng.uniform(2, 5)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
        img += rng.uniform(0.5, 1.5) * blob * np.exp(1j * rng.uniform(0, 6))
    return img


def test_oversampled_readout_is_removed_and_image_matches(tmp_path):
    slices, coils, h, w = 2, 3, 24, 20
    # coil images on the oversampled readout FOV (2h, w), content only in the central h rows
    images = np.zeros((slices, coils, 2 * h, w), np.complex64)
    for s in range(slices):
        for c in range(coils):
            images[s, c, h // 2:h // 2 + h] = _smooth_image(h, w, seed=10 * s + c)
    full_kspace = _fft2c(images).astype(np.complex64)
    sm = equispaced_column_mask(w, 2, 0.3, seed=1)
    kspace = full_kspace * sm.mask
    expected = np.sqrt((np.abs(_ifft2c(kspace)) ** 2).sum(axis=1))[:, h // 2:h // 2 + h]   # (slices, h, w)
    header = make_ismrmrd_header((2 * h, w, 1), (h, w, 1), (h * 1.5, w * 1.5, 4.0))
    path = _fastmri_file(tmp_path / "os.h5", kspace.astype(np.complex64), mask=sm.mask[0],
                         ismrmrd_header=header.encode())

    out = read_fastmri(path)
    assert out.kspace.shape == (slices, coils, h, w)
    assert out.recon_shape == (h, w) and out.attrs["readout_oversampling_removed"]
    np.testing.assert_array_equal(out.mask, sm.mask)
    image = zero_filled(torch.from_numpy(out.kspace), torch.from_numpy(out.mask)).abs().numpy()
    np.testing.assert_allclose(image, expected, atol=1e-5 * expected.max())
    # the unsampled columns stay exactly zero through the hybrid-space crop
    assert np.all(out.kspace[..., sm.mask[0] == 0] == 0)
    # voxel sizes from reconSpace FOV / matrix, slice thickness from FOV z
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), [1.5, 1.5, 4.0])

    kept = read_fastmri(path, remove_oversampling=False)
    assert kept.kspace.shape == (slices, coils, 2 * h, w) and not kept.attrs["readout_oversampling_removed"]
    image = zero_filled(torch.from_numpy(kept.kspace), torch.from_numpy(kept.mask)).abs().numpy()
    np.testing.assert_allclose(image[:, h // 2:h // 2 + h], expected, atol=1e-5 * expected.max())


def test_fully_sampled_reference_matches_after_oversampling_removal(tmp_path):
    h, w = 16, 12
    images = np.zeros((1, 2, 2 * h, w), np.complex64)
    images[0, :, h // 2:h // 2 + h] = [_smooth_image(h, w, 3), _smooth_image(h, w, 4)]
    reference = np.sqrt((np.abs(images) ** 2).sum(axis=1))[:, h // 2:h // 2 + h].astype(np.float32)
    path = write_fastmri(tmp_path / "f.h5", MRIAcquisition(_fft2c(images).astype(np.complex64), reference=reference,
                                                             recon_shape=(h, w)),
                         header_xml=make_ismrmrd_header((2 * h, w), (h, w), (h, w, 2.0)))
    out = read_fastmri(path)
    image = zero_filled(torch.from_numpy(out.kspace)).abs().numpy()
    np.testing.assert_allclose(image, out.reference, atol=1e-5 * reference.max())
    np.testing.assert_array_equal(out.mask, np.ones((1, w), np.float32))


def _fastmri_file(path, kspace, **extra):
    """A file laid out as fastMRI's own files are, written without our writer."""
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        for key, value in extra.items():
            if key == "attrs":
                f.attrs.update(value)
            else:
                f.create_dataset(key, data=value)
    return path


def test_reads_a_fastmri_layout_file(tmp_path):
    slices, coils, h, w = 3, 2, 32, 20
    mask = np.zeros(w, bool)
    mask[::3] = True
    mask[8:12] = True
    kspace = _crandn((slices, coils, h, w), 5) * mask
    header = make_ismrmrd_header((h, w, 1), (16, 16, 1), (120.0, 120.0, 3.0))
    path = _fastmri_file(tmp_path / "file1000000.h5", kspace, mask=mask,
                         reconstruction_rss=np.ones((slices, 16, 16), np.float32), ismrmrd_header=header.encode(),
                         attrs={"acquisition": "CORPD_FBK", "max": 1.0, "norm": 2.0, "patient_id": "abc",
                                "acceleration": 4, "num_low_frequency": 4})
    out = read_fastmri(path)
    assert out.kspace.shape == (slices, coils, 16, w)      # readout 32 -> recon x 16
    assert out.recon_shape == (16, 16)
    np.testing.assert_array_equal(out.mask, mask[None].astype(np.float32))
    assert out.num_low_frequencies == 4                    # from the file's attribute, not the centre run
    assert out.attrs["acquisition"] == "CORPD_FBK" and out.attrs["patient_id"] == "abc"
    assert out.attrs["max"] == 1.0 and out.attrs["norm"] == 2.0 and out.attrs["acceleration"] == 4
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), [7.5, 7.5, 3.0])
    # slices are centred on the origin: slice 1 of 3 at z = 0
    assert (out.affine @ [8, 8, 1, 1])[:3] == pytest.approx([0.0, 0.0, 0.0])


def test_single_coil_file_gets_a_coil_axis(tmp_path):
    kspace = _crandn((2, 16, 12), 6)
    path = _fastmri_file(tmp_path / "sc.h5", kspace, reconstruction_esc=np.ones((2, 16, 12), np.float32))
    out = read_fastmri(path)
    assert out.kspace.shape == (2, 1, 16, 12)
    np.testing.assert_array_equal(out.kspace[:, 0], kspace)
    assert out.recon_shape == (16, 12) and out.reference.shape == (2, 16, 12)
    assert out.header_xml is None


def test_mask_recovered_from_zero_columns(tmp_path):
    w = 30
    mask = np.zeros(w, np.float32)
    mask[[0, 4, 9, 13, 14, 15, 16, 17, 22, 27]] = 1
    path = _fastmri_file(tmp_path / "m.h5", _crandn((1, 2, 8, w), 7) * mask)
    out = read_fastmri(path)
    np.testing.assert_array_equal(out.mask, mask[None])
    assert out.num_low_frequencies == 5          # columns 13..17 around the centre column 15
    assert out.recon_shape is None and out.image_shape == (8, w)


def test_slice_subsets_read_only_those_slices(tmp_path):
    acq = _acquisition(slices=5, seed=3)
    acq.kspace[0, 0, 0, 0] = np.nan          # a damaged slice the subsets never touch
    path = write_fastmri(tmp_path / "v.h5", acq)
    with pytest.raises(InputError, match="non-finite"):
        read_fastmri(path)
    for selection, expected in [([3, 1], [3, 1]), (slice(1, 5, 2), [1, 3]), (2, [2]), (slice(-2, None), [3, 4])]:
        out = read_fastmri(path, slices=selection)
        np.testing.assert_array_equal(out.kspace, acq.kspace[expected])
        np.testing.assert_array_equal(out.reference, acq.reference[expected])
        assert out.attrs["slice_indices"] == expected
        # the first selected slice sits where it was in the whole volume
        np.testing.assert_allclose(out.affine[:3, 3], (acq.affine @ [0, 0, expected[0], 1])[:3])
    stepped = read_fastmri(path, slices=slice(1, 5, 2))
    np.testing.assert_allclose(stepped.affine[:3, 2], 2 * acq.affine[:3, 2])


# ---------------------------------------------------------------- bad input

def _good(tmp_path, name="good.h5", **kw):
    return write_fastmri(tmp_path / name, _acquisition(**kw))


def _rewrite(path, **changes):
    with h5py.File(path, "a") as f:
        for key, value in changes.items():
            if key in f:
                del f[key]
            if value is not None:
                f.create_dataset(key, data=value)
    return path


_expect = partial(expect_input_error, read_fastmri)


def test_error_missing_and_unreadable_files(tmp_path):
    _expect(tmp_path / "nope.h5", "file not found")
    _expect(tmp_path, "directory")
    text = tmp_path / "notes.h5"
    text.write_text("not an hdf5 file")
    _expect(text, "not a readable HDF5 file")
    good = _good(tmp_path)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _expect(truncated, "not a readable HDF5 file")


def test_error_missing_kspace_names_what_is_there(tmp_path):
    path = _rewrite(_good(tmp_path), kspace=None)
    _expect(path, "no 'kspace' dataset", "reconstruction_rss", "mask")


@pytest.mark.parametrize("shape", [(8, 8), (1, 1, 2, 8, 8)])
def test_error_wrong_dimensions(tmp_path, shape):
    path = _rewrite(_good(tmp_path), kspace=np.ones(shape, np.complex64))
    _expect(path, "'kspace' must be", f"{len(shape)} dimensions")


def test_error_non_float_dtype(tmp_path):
    path = _rewrite(_good(tmp_path), kspace=np.ones((3, 4, 32, 24), np.int16))
    _expect(path, "complex", "int16")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_non_finite_kspace(tmp_path, bad):
    acq = _acquisition()
    acq.kspace[1, 2, 3, 4] = bad
    _expect(write_fastmri(tmp_path / "nan.h5", acq), "'kspace' contains non-finite values")


def test_error_empty_mask(tmp_path):
    path = _rewrite(_good(tmp_path), mask=np.zeros(24, np.float32))
    _expect(path, "'mask' is empty")
    # no mask dataset and all-zero k-space: nothing sampled either
    path = _rewrite(_good(tmp_path, "zero.h5"), mask=None, kspace=np.zeros((3, 4, 32, 24), np.complex64))
    _expect(path, "all zeros", "empty mask")


def test_error_mask_shape_mismatch(tmp_path):
    path = _rewrite(_good(tmp_path), mask=np.ones(23, np.float32))
    _expect(path, "'mask' has shape (23,)", "(H, W) = (32, 24)")


def test_error_reference_shape_mismatch(tmp_path):
    path = _rewrite(_good(tmp_path), reconstruction_rss=np.ones((3, 30, 20), np.float32))
    _expect(path, "reconSpace matrix is (32, 20)", "(30, 20)")
    path = _rewrite(_good(tmp_path, "b.h5"), reconstruction_rss=np.ones((2, 32, 20), np.float32))
    _expect(path, "'reconstruction_rss' has shape (2, 32, 20)", "3 k-space slices")


def test_error_bad_header_and_slice_selection(tmp_path):
    path = _rewrite(_good(tmp_path), ismrmrd_header=np.bytes_(b"<ismrmrdHeader><encoding>"))
    _expect(path, "ISMRMRD header is not valid XML")
    _expect(_good(tmp_path, "c.h5"), "slice indices [7] out of range for 3 slices", slices=[0, 7])
