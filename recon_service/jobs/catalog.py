"""Service pipeline names (``mri-cg-sense``, ``ct-fbp``, ...) over the reconstruction method registry.

A pipeline takes exactly one raw-data file of its modality (fastMRI or ISMRMRD HDF5 for MRI, a sinogram
HDF5 for CT); DICOM files in the same submission only supply the patient and study of the results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.reconstructors import available

RAW_KINDS = {"mri": ("fastmri", "ismrmrd"), "ct": ("sinogram",)}


@dataclass(frozen=True)
class PipelineInfo:
    name: str
    modality: str
    method: str
    description: str
    input_kinds: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)


def pipeline_name(modality: str, method: str) -> str:
    return f"{modality}-{method}"


def list_pipelines() -> list[PipelineInfo]:
    return [PipelineInfo(pipeline_name(r.modality, r.name), r.modality, r.name, r.description,
                         RAW_KINDS[r.modality], dict(r.defaults)) for r in available()]


def get_pipeline(name: str) -> PipelineInfo:
    """The pipeline called ``name``; KeyError with the known names otherwise."""
    for info in list_pipelines():
        if info.name == name:
            return info
    raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(p.name for p in list_pipelines())}")
