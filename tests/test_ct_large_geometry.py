"""Geometries over the one-matrix bound are applied in view chunks whose matrices are built once and kept, with
the numbers of the one-matrix path. The bound is lowered here so that small geometries take the chunked path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models.physics.ct.projector as projector
from models.physics.ct import CTProjector, ParallelBeamGeometry, fan_beam, parallel_beam
from models.physics.ct.projector import nnz_bound

GEOMETRIES = {
    "parallel": lambda: parallel_beam(32, 20),
    "fan-flat": lambda: fan_beam(28, 17, detector_type="flat"),
    "fan-equiangular-limited": lambda: fan_beam(24, 11, arc_deg=200.0, detector_type="equiangular"),
    "parallel-nonsquare": lambda: ParallelBeamGeometry(angles=np.random.default_rng(2).uniform(0, 7, 13),
                                                       num_detectors=50, image_shape=(20, 30), pixel_size=0.9),
}


def lowered(geom, views_per_chunk: int) -> int:
    """A ``max_nnz`` that puts ``views_per_chunk`` views into each chunk."""
    return views_per_chunk * nnz_bound(geom) // geom.num_views


def _dot_test(op, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *op.image_shape, generator=g)
    y = torch.rand(3, *op.sinogram_shape, generator=g)
    lhs = torch.sum(op.forward(x).double() * y.double())
    rhs = torch.sum(x.double() * op.adjoint(y).double())
    return float(abs(lhs - rhs) / abs(lhs))


@pytest.mark.parametrize("name", list(GEOMETRIES))
@pytest.mark.parametrize("views_per_chunk", [1, 3, 4])
def test_chunked_equals_one_matrix(name, views_per_chunk):
    geom = GEOMETRIES[name]()
    whole = CTProjector(geom)
    chunked = CTProjector(geom, max_nnz=lowered(geom, views_per_chunk), cache=False)
    assert whole.chunks is None and chunked.keeps_matrices
    assert [b - a for a, b in chunked.chunks][:-1] == [views_per_chunk] * (len(chunked.chunks) - 1)
    assert chunked.chunks[-1][1] == geom.num_views
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, *geom.image_shape, generator=g)
    y = torch.rand(2, 3, *geom.sinogram_shape, generator=g)
    # the forward is the same rows of the same matrix: the same numbers
    assert torch.equal(chunked.forward(x), whole.forward(x))
    # the adjoint sums the chunks' backprojections: the same up to float32 summation order
    back, reference = chunked.adjoint(y), whole.adjoint(y)
    assert torch.allclose(back, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    assert _dot_test(chunked) < 1e-5


def test_chunk_matrices_are_built_once_and_kept(monkeypatch):
    geom = parallel_beam(32, 20)
    builds = []
    build = projector.build_system_matrices
    monkeypatch.setattr(projector, "build_system_matrices", lambda g: builds.append(g.num_views) or build(g))
    op = CTProjector(geom, max_nnz=lowered(geom, 6), cache=False)
    assert op.chunks == [(0, 6), (6, 12), (12, 18), (18, 20)]
    x, y = torch.rand(2, 32, 32), torch.rand(2, *geom.sinogram_shape)
    for _ in range(3):  # as an iterative method calls them
        op.forward(x)
        op.adjoint(y)
    assert builds == [6, 6, 6, 2]  # each chunk once
    first = op.chunk_matrices()
    assert op.chunk_matrices() is first and len(first) == 4

    # the next projector of the same geometry reuses the cached chunks (the last large geometry is cached)
    cached = CTProjector(geom, max_nnz=lowered(geom, 6))
    cached.forward(x)
    again = CTProjector(geom, max_nnz=lowered(geom, 6))
    again.adjoint(y)
    assert len(builds) == 8 and again.chunk_matrices()[0][0] is cached.chunk_matrices()[0][0]


def test_above_the_kept_bound_chunks_are_built_per_call_and_not_kept(monkeypatch):
    geom = fan_beam(28, 17)
    whole = CTProjector(geom)
    builds = []
    build = projector.build_system_matrices
    monkeypatch.setattr(projector, "build_system_matrices", lambda g: builds.append(g.num_views) or build(g))
    streamed = CTProjector(geom, max_nnz=lowered(geom, 5), max_kept_nnz=lowered(geom, 10))
    assert not streamed.keeps_matrices and len(streamed.chunks) == 4
    x, y = torch.rand(28, 28), torch.rand(*geom.sinogram_shape)
    assert torch.equal(streamed.forward(x), whole.forward(x))
    assert torch.allclose(streamed.adjoint(y), whole.adjoint(y), rtol=1e-5, atol=1e-4)
    assert builds == [5, 5, 5, 2] * 2 and streamed._chunk_mats == {}
    with pytest.raises(ValueError, match="keeps no chunk matrices"):
        streamed.chunk_matrices()


def test_chunked_projector_is_differentiable():
    geom = parallel_beam(24, 9)
    op = CTProjector(geom, max_nnz=lowered(geom, 4), cache=False)
    x = torch.rand(2, 24, 24, requires_grad=True)
    y = torch.rand(2, *geom.sinogram_shape)
    (0.5 * ((op.forward(x) - y) ** 2).sum()).backward()
    assert torch.allclose(x.grad, op.adjoint(op.forward(x.detach()) - y), atol=1e-4)
    s = torch.rand(2, *geom.sinogram_shape, requires_grad=True)
    (op.adjoint(s) * x.detach()).sum().backward()
    assert torch.allclose(s.grad, op.forward(x.detach()), atol=1e-4)


def test_the_issue_geometry_is_chunked_and_keeps_its_matrices():
    """512 x 512 with 256 views is over the default bound (no matrices are built here)."""
    op = CTProjector(parallel_beam(512, 256))
    assert op.chunks is not None and len(op.chunks) > 1 and op.keeps_matrices
    assert CTProjector(parallel_beam(512, 64)).chunks is None
