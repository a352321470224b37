"""CT physics: geometries, Joseph projector with exact adjoint, FBP filters and weighting."""

from models.physics.ct.geometry import (
    FanBeamGeometry,
    Geometry,
    ParallelBeamGeometry,
    default_num_detectors,
    fan_beam,
    geometry_from_dict,
    parallel_beam,
)
from models.physics.ct.projector import CTProjector, system_matrices

__all__ = ["CTProjector", "FanBeamGeometry", "Geometry", "ParallelBeamGeometry", "default_num_detectors", "fan_beam",
           "geometry_from_dict", "parallel_beam", "system_matrices"]
