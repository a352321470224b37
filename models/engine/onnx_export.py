"""Export torch modules to ONNX with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``).

Why dynamo: it exports ``torch.fft`` on ``view_as_complex`` inputs (to the ONNX ``DFT`` op), which the
legacy TorchScript exporter cannot. Complex arithmetic must still be written in real/imag form.

Dynamic shapes: with ``dynamic=True`` every axis of every tensor input whose example size is > 1 is
exported as a symbolic dimension, except a trailing axis of size 2 (this project's complex axis).
Equal sizes across inputs (e.g. H of k-space and of the maps) are tied by the exporter from the
model's own shape relations. Axes of size 1 in the example (e.g. the mask's coil axis) stay static, so
export with batch >= 2 to keep the batch dynamic. Inputs that broadcast against each other get tied
sizes in the graph: for the unrolled networks the mask must then have the k-space's batch size, and a
file exported with a column mask (N, 1, 1, W, 1) takes column masks only. The export fails (rather than silently
specialising) if the model forces a dimension marked dynamic to a constant.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

LOG = logging.getLogger(__name__)


def default_dynamic_shapes(example_inputs: Sequence[torch.Tensor]) -> tuple[dict[int, object], ...]:
    """Per input: ``{axis: Dim.DYNAMIC}`` for every axis of size > 1 except a trailing complex axis of size 2."""
    shapes = []
    for tensor in example_inputs:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"example inputs must be tensors, got {type(tensor).__name__}")
        spec: dict[int, object] = {}
        for axis, size in enumerate(tensor.shape):
            is_complex_axis = axis == tensor.ndim - 1 and size == 2
            spec[axis] = torch.export.Dim.DYNAMIC if size > 1 and not is_complex_axis else torch.export.Dim.STATIC
        shapes.append(spec)
    return tuple(shapes)


def export_onnx(module: nn.Module, example_inputs: Sequence[torch.Tensor], path: str | os.PathLike,
                dynamic: bool = True, dynamic_shapes: Sequence[Mapping[int, object]] | None = None,
                output_names: Sequence[str] | None = None, opset_version: int | None = None) -> Path:
    """Export ``module`` (put in eval mode) called as ``module(*example_inputs)`` to an ONNX file.

    The weights are stored inside the single ``.onnx`` file. Input names are the names of the
    ``forward`` parameters. ``dynamic_shapes`` overrides the default rule (see module docstring);
    with ``dynamic=False`` all shapes are fixed to the example's. Returns the written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example_inputs = tuple(example_inputs)
    if dynamic and dynamic_shapes is None:
        dynamic_shapes = default_dynamic_shapes(example_inputs)
    was_training = module.training
    module.eval()
    kwargs: dict[str, object] = {"dynamo": True, "external_data": False, "verbose": False}
    if dynamic:
        kwargs["dynamic_shapes"] = tuple(dict(s) for s in dynamic_shapes)
    if output_names is not None:
        kwargs["output_names"] = list(output_names)
    if opset_version is not None:
        kwargs["opset_version"] = opset_version
    try:
        params = list(inspect.signature(module.forward).parameters)
        kwargs["input_names"] = params[: len(example_inputs)]
    except (TypeError, ValueError):
        pass
    # the exporter warns that torchvision's ops cannot be registered: there is no torchvision here, and no need
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not actionable here
            program = torch.onnx.export(module, example_inputs, **kwargs)
    finally:
        module.train(was_training)
    if program is None:
        raise RuntimeError(f"ONNX export of {type(module).__name__} produced no program")
    program.save(str(path), external_data=False)
    LOG.info("exported %s to %s", type(module).__name__, path)
    return path
