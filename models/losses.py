"""Training losses on magnitude images (N, H, W).

SSIM follows the fastMRI evaluation definition (7x7 uniform window, k1 = 0.01, k2 = 0.03, data range
per sample = the target's maximum), computed with average pooling so it is differentiable:

    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    C1 = (k1 L)^2, C2 = (k2 L)^2, with unbiased (N / (N - 1)) local covariances as scikit-image uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: torch.Tensor | None = None,
         win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM over the valid window positions of each sample; returns (N,)."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"ssim takes two (N, H, W) tensors of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if data_range is None:
        data_range = target.flatten(1).max(dim=1).values
    x, y = pred.unsqueeze(1), target.unsqueeze(1)
    n = win_size * win_size
    cov_norm = n / (n - 1)

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, win_size, stride=1)

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    L = data_range.reshape(-1, 1, 1, 1)
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def l1_ssim_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 1.0) -> torch.Tensor:
    """``L1(pred, target) / mean|target| + ssim_weight * (1 - SSIM)``, averaged over the batch.

    The L1 term is made scale-free by the target's mean so the two terms are of comparable size.
    """
    scale = target.abs().flatten(1).mean(dim=1).clamp_min(1e-12)
    l1 = ((pred - target).abs().flatten(1).mean(dim=1) / scale).mean()
    return l1 + ssim_weight * (1 - ssim(pred, target)).mean()
