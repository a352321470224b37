"""Diffusion priors and samplers: schedule, denoisers, data consistency, DDS / DiffusionMBIR-style sampling, and a
Gaussian test bed with an exact denoiser and posterior."""

from models.diffusion.consistency import ADMMTVConsistency, DataConsistency, ProximalConsistency
from models.diffusion.dds import dds_posterior, dds_sample
from models.diffusion.denoiser import Denoiser, SliceBatched, TorchDenoiser, as_volume_denoiser
from models.diffusion.gaussian import GaussianDenoiser, GaussianPrior, dense_matrix, real_vector
from models.diffusion.sampling import StepInfo, ancestral_eta, diffusion_sample
from models.diffusion.schedule import VPSchedule, ddim_step, tweedie

__all__ = [
    "ADMMTVConsistency", "DataConsistency", "Denoiser", "GaussianDenoiser", "GaussianPrior", "ProximalConsistency",
    "SliceBatched", "StepInfo", "TorchDenoiser", "VPSchedule", "ancestral_eta", "as_volume_denoiser", "dds_posterior",
    "dds_sample", "ddim_step", "dense_matrix", "diffusion_sample", "real_vector", "tweedie",
]
