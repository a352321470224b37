"""Diffusion priors and samplers: schedule, denoisers, data consistency, DDS / DiffusionMBIR-style sampling, A-DPS
(exact, and a fast approximation) for EDM priors of complex MRI images, and a Gaussian test bed with exact denoisers
and posterior."""

from models.diffusion.adps import ComplexDenoiser, adps_posterior, adps_sample, edm_denoiser
from models.diffusion.adps_fast import adps_fast_posterior, adps_fast_sample
from models.diffusion.consistency import ADMMTVConsistency, DataConsistency, ProximalConsistency
from models.diffusion.dds import dds_posterior, dds_sample
from models.diffusion.denoiser import Denoiser, SliceBatched, TorchDenoiser, as_volume_denoiser
from models.diffusion.gaussian import (
    GaussianDenoiser,
    GaussianEDMDenoiser,
    GaussianPrior,
    complex_dense_matrix,
    dense_matrix,
    real_vector,
)
from models.diffusion.sampling import StepInfo, ancestral_eta, diffusion_sample
from models.diffusion.schedule import VPSchedule, ddim_step, tweedie

__all__ = [
    "ADMMTVConsistency", "ComplexDenoiser", "DataConsistency", "Denoiser", "GaussianDenoiser", "GaussianEDMDenoiser",
    "GaussianPrior", "ProximalConsistency", "SliceBatched", "StepInfo", "TorchDenoiser", "VPSchedule",
    "adps_fast_posterior", "adps_fast_sample", "adps_posterior", "adps_sample", "ancestral_eta", "as_volume_denoiser",
    "complex_dense_matrix", "dds_posterior", "dds_sample", "ddim_step", "dense_matrix", "diffusion_sample",
    "edm_denoiser", "real_vector", "tweedie",
]
