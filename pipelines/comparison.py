"""The images a reviewer compares a learned reconstruction with: the direct one (zero-filled MRI, FBP CT), a
classical one (CG-SENSE for MRI; for CT the direct FBP already is the classical baseline) and the reference when
the input carries one. Magnitudes, float32, ``(z, y, x)`` like the reconstruction."""

from __future__ import annotations

import numpy as np

from pipelines.pipeline import Acquisition, modality_of, reconstruct

# pane name -> method, per modality
PANES = {"mri": (("zero-filled", "zero-filled"), ("classical", "cg-sense")), "ct": (("zero-filled", "fbp"),)}
LABELS = {"recon": "learned reconstruction", "zero-filled": "zero-filled / direct", "classical": "classical",
          "reference": "reference", "uncertainty": "uncertainty (std)"}


def comparison_panes(acq: Acquisition) -> dict[str, np.ndarray]:
    """``{pane: magnitude volume}``: the direct and classical reconstructions at their defaults, and the reference."""
    modality = modality_of(acq)
    panes = {}
    for name, method in PANES[modality]:
        panes[name] = reconstruct(acq, method).volume.magnitude()
    if acq.reference is not None:
        panes["reference"] = np.abs(np.asarray(acq.reference)).astype(np.float32)
    return panes


def pane_methods(modality: str) -> dict[str, str]:
    return dict(PANES[modality])
