"""The one result writer: NIfTI + PNG preview + metrics JSON of a reconstructed volume."""

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from pipelines.data import ImageVolume
from pipelines.io.outputs import write_volume_outputs


def _volume() -> ImageVolume:
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((3, 8, 10)) + 1j * rng.standard_normal((3, 8, 10))).astype(np.complex64)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = [-2.0, -2.0, 0.0]
    return ImageVolume(data, affine)


def test_writes_magnitude_nifti_png_and_metrics(tmp_path):
    volume = _volume()
    out = write_volume_outputs(volume, tmp_path / "a" / "v.nii.gz", tmp_path / "a" / "v.png", tmp_path / "a" / "m.json",
                               {"psnr": 30.0, "ssim": 0.9}, {"method": "fbp", "psnr": "overridden"})
    assert list(out) == ["nifti", "png", "metrics"]
    image = nib.load(str(out["nifti"]))
    assert np.allclose(image.get_fdata().transpose(2, 1, 0), np.abs(volume.data), atol=1e-6)
    assert np.allclose(image.affine, volume.affine)
    assert Image.open(out["png"]).mode == "L"
    text = out["metrics"].read_text()
    assert text.endswith("\n") and json.loads(text) == {"method": "fbp", "psnr": 30.0, "ssim": 0.9}


def test_no_metrics_no_json(tmp_path):
    out = write_volume_outputs(_volume(), tmp_path / "v.nii", tmp_path / "v.png", tmp_path / "m.json")
    assert list(out) == ["nifti", "png"] and not (tmp_path / "m.json").exists()
    with pytest.raises(ValueError, match="metrics_path"):
        write_volume_outputs(_volume(), tmp_path / "v.nii", tmp_path / "v.png", metrics={"psnr": 1.0})
