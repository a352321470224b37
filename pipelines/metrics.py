"""Image quality metrics exactly as fastMRI defines them, on magnitude volumes (z, y, x).

* NMSE  = ||gt - pred||^2 / ||gt||^2 over the whole volume
* PSNR  = 10 log10(max(gt)^2 / MSE), data range = the target's maximum over the volume
* SSIM  = mean over slices of scikit-image's SSIM with a 7x7 uniform window, k1 = 0.01, k2 = 0.03,
          data range = the target's maximum over the volume
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def _check(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt = np.abs(np.asarray(gt)).astype(np.float64)
    pred = np.abs(np.asarray(pred)).astype(np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"target shape {gt.shape} and prediction shape {pred.shape} differ")
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    if gt.ndim != 3:
        raise ValueError(f"metrics take (z, y, x) volumes or 2D images, got {gt.ndim} dims")
    return gt, pred


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    gt, pred = _check(gt, pred)
    return float(np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2)


def psnr(gt: np.ndarray, pred: np.ndarray) -> float:
    gt, pred = _check(gt, pred)
    mse = float(np.mean((gt - pred) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(gt.max() ** 2 / mse))


def ssim(gt: np.ndarray, pred: np.ndarray) -> float:
    gt, pred = _check(gt, pred)
    data_range = float(gt.max())
    values = [structural_similarity(g, p, win_size=7, K1=0.01, K2=0.03, data_range=data_range)
              for g, p in zip(gt, pred, strict=True)]
    return float(np.mean(values))


METRICS = {"psnr": psnr, "ssim": ssim, "nmse": nmse}


def evaluate_volume(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """All three metrics for one volume."""
    return {name: fn(gt, pred) for name, fn in METRICS.items()}
