"""Service pipeline names (``mri-cg-sense``, ``ct-fbp``, ...) over the reconstruction method registry.

A pipeline is a declared method (``pipelines.reconstructors.Method``) under its service name. It takes exactly
one raw-data file of its modality (the method's ``input_kinds``); DICOM files in the same submission only supply
the patient and study of the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.reconstructors import Method, MethodParams, available


@dataclass(frozen=True)
class PipelineInfo:
    name: str
    method: Method

    @property
    def modality(self) -> str:
        return self.method.modality

    @property
    def input_kinds(self) -> tuple[str, ...]:
        return self.method.input_kinds

    @property
    def learned(self) -> bool:
        return self.method.learned is not None

    def check(self, params: dict[str, Any] | None) -> MethodParams:
        """The method's own parameter check (``ParamError`` naming the parameter and what it allows)."""
        return self.method.check(params)


def pipeline_name(modality: str, method: str) -> str:
    return f"{modality}-{method}"


def list_pipelines() -> list[PipelineInfo]:
    return [PipelineInfo(pipeline_name(m.modality, m.name), m) for m in available()]


def get_pipeline(name: str) -> PipelineInfo:
    """The pipeline called ``name``; KeyError with the known names otherwise."""
    for info in list_pipelines():
        if info.name == name:
            return info
    raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(p.name for p in list_pipelines())}")
