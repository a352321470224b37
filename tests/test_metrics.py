import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipelines.metrics import evaluate_volume, nmse, psnr, ssim


def _volume(seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.3, 1, (3, 32, 40)).astype(np.float32)
    return gt, gt + 0.05 * rng.standard_normal(gt.shape).astype(np.float32)


def test_metrics_match_fastmri_definitions():
    gt, pred = _volume()
    # fastMRI: PSNR and SSIM with data_range = gt.max() over the volume; SSIM averaged over slices
    assert psnr(gt, pred) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=gt.max()), rel=1e-6)
    ref_ssim = np.mean([structural_similarity(g, p, data_range=gt.max()) for g, p in zip(gt, pred, strict=True)])
    assert ssim(gt, pred) == pytest.approx(ref_ssim, rel=1e-6)
    assert nmse(gt, pred) == pytest.approx(np.sum((gt - pred) ** 2) / np.sum(gt**2), rel=1e-5)


def test_metrics_order_worse_predictions_lower():
    gt, pred = _volume()
    worse = gt + 3 * (pred - gt)
    a, b = evaluate_volume(gt, pred), evaluate_volume(gt, worse)
    assert a["psnr"] > b["psnr"] and a["ssim"] > b["ssim"] and a["nmse"] < b["nmse"]
    assert psnr(gt, gt) == float("inf") and ssim(gt, gt) == pytest.approx(1.0) and nmse(gt, gt) == 0


def test_metrics_use_magnitude_and_reject_mismatch():
    gt, pred = _volume()
    assert psnr(gt, pred * np.exp(1j * 0.7)) == pytest.approx(psnr(gt, pred), rel=1e-6)
    with pytest.raises(ValueError, match="differ"):
        psnr(gt, pred[:, :-1])
