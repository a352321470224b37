import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from models.losses import l1_ssim_loss, ssim


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (2, 24, 30)).astype(np.float32)
    pred = target + 0.1 * rng.standard_normal(target.shape).astype(np.float32)
    got = ssim(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    for i in range(2):
        want = structural_similarity(pred[i], target[i], data_range=target[i].max(), win_size=7)
        assert got[i] == pytest.approx(want, abs=1e-3)


def test_loss_is_zero_for_a_perfect_prediction_and_has_gradients():
    target = torch.rand(1, 16, 16) + 0.5
    assert float(l1_ssim_loss(target, target)) == pytest.approx(0.0, abs=1e-5)
    pred = (target + 0.2 * torch.randn_like(target)).requires_grad_()
    loss = l1_ssim_loss(pred, target)
    loss.backward()
    assert float(loss.detach()) > 0.05 and pred.grad is not None and float(pred.grad.abs().sum()) > 0
