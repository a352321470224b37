import json

import nibabel as nib
import numpy as np

from pipelines.io.sinogram import read_sinogram


def test_ct_simulate_reconstruct_evaluate_end_to_end(tmp_path, run_recon):
    data = tmp_path / "ct"
    run_recon("simulate", "ct", "--out", str(data), "--views", "8", "--size", "48", "--slices", "4",
              "--source", "ellipsoids", "--noise", "100000")
    files = sorted(data.glob("*.h5"))
    assert len(files) == 3
    acq = read_sinogram(files[0])
    assert acq.sinogram.shape[:2] == (4, 8) and acq.angles.shape == (8,) and acq.reference.shape == (4, 48, 48)

    run_recon("reconstruct", str(files[0]), "--method", "fbp", "--out", str(tmp_path / "rec"))
    image = nib.load(str(next((tmp_path / "rec").glob("*.nii.gz"))))
    assert image.shape == (48, 48, 4) and np.allclose(image.affine, acq.affine)

    out = tmp_path / "ct.json"
    proc = run_recon("evaluate", str(data), "--methods", "fbp,admm-tv", "--json", str(out))
    summary = json.loads(out.read_text())
    fbp, tv = summary["methods"]["fbp"], summary["methods"]["admm-tv"]
    assert summary["volumes"] == 3 and "admm-tv" in proc.stdout
    # sparse views: the TV baseline is far better than FBP
    assert tv["psnr"]["mean"] > fbp["psnr"]["mean"] + 3 and tv["ssim"]["mean"] > fbp["ssim"]["mean"]
    assert tv["seconds_per_slice"] > 0


def test_ct_cli_errors(tmp_path, run_recon):
    proc = run_recon("simulate", "ct", "--out", str(tmp_path), "--views", "0", check=False)
    assert proc.returncode == 2 and "views" in proc.stderr
    proc = run_recon("simulate", "ct", "--out", str(tmp_path), "--views", "4", "--source",
                     str(tmp_path / "missing.nii.gz"), check=False)
    assert proc.returncode == 2 and "missing.nii.gz" in proc.stderr
