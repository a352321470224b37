"""MRI physics: centered FFTs, coil operators, sampling masks, sensitivity maps, SENSE operator."""

from models.physics.mri.coils import CoilExpand, expand, reduce, rss
from models.physics.mri.fft import FFT2c, fft2c, fft2c_matmul, ifft2c, ifft2c_matmul
from models.physics.mri.masks import SamplingMask, make_mask
from models.physics.mri.sense import Mask, SenseOperator, SoftSenseOperator

__all__ = ["FFT2c", "CoilExpand", "Mask", "SamplingMask", "SenseOperator", "SoftSenseOperator", "expand", "fft2c",
           "fft2c_matmul", "ifft2c", "ifft2c_matmul", "make_mask", "reduce", "rss"]
