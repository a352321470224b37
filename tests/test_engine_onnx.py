"""ONNX export of the unrolled networks and ONNX Runtime sessions.

One model instance per kind is exported once with each FFT variant (the same weights); each file is
then run on shapes and coil counts other than the export example to prove the dynamic axes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.engine import create_session, default_dynamic_shapes, export_onnx
from models.unrolled import build_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


CONFIGS = {
    # RecurrentVarNet: column masks (N, 1, 1, W, 1)
    "recurrentvarnet": ({"num_steps": 2, "hidden_channels": 8, "num_layers": 2, "multiscale": 2,
                         "initializer_channels": [8, 8, 8, 8]}, False),
    # RIM with IndRNN cells and map refinement: 2D masks (N, 1, H, W, 1)
    "rim": ({"num_steps": 2, "hidden_channels": 8, "num_layers": 2, "cell": "indrnn",
             "sens_refinement": True, "sens_unet_channels": 4, "sens_unet_pools": 2}, True),
}
EXPORT_SHAPE = (2, 4, 32, 24)
OTHER_SHAPES = [(1, 3, 40, 36), (3, 7, 17, 29)]


def make_data(n: int, c: int, h: int, w: int, mask_2d: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    kspace = torch.randn(n, c, h, w, 2, generator=g)
    mask = (torch.rand(n, 1, h if mask_2d else 1, w, 1, generator=g) < 0.4).float()
    maps = torch.randn(n, c, h, w, 2, generator=g)
    maps = maps / maps.pow(2).sum(dim=(1, 4), keepdim=True).sqrt()
    return kspace * mask, mask, maps


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = float(np.mean((reference - test) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(float(np.abs(reference).max()) ** 2 / mse)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{kind: (model, mask_2d, {variant: path})}, the same weights exported with both FFT variants."""
    out = {}
    root = tmp_path_factory.mktemp("onnx")
    for kind, (config, mask_2d) in CONFIGS.items():
        torch.manual_seed(0)
        model = build_model(kind, config).eval()
        paths = {}
        for variant in ("dft-op", "matmul"):
            model.set_fft_variant(variant)
            paths[variant] = export_onnx(model, make_data(*EXPORT_SHAPE, mask_2d), root / f"{kind}-{variant}.onnx",
                                         output_names=["image"])
        out[kind] = (model, mask_2d, paths)
    return out


@pytest.mark.parametrize("variant", ["dft-op", "matmul"])
@pytest.mark.parametrize("kind", ["recurrentvarnet", "rim"])
def test_onnx_runtime_matches_torch_on_several_shapes(exported, kind, variant):
    model, mask_2d, paths = exported[kind]
    session, provider = create_session(paths[variant], providers_preference=("CPUExecutionProvider",), threads=1)
    assert provider == "CPUExecutionProvider"
    assert [i.name for i in session.get_inputs()] == ["masked_kspace", "mask", "sens_maps"]
    assert [o.name for o in session.get_outputs()] == ["image"]
    model.set_fft_variant(variant)
    for seed, shape in enumerate([EXPORT_SHAPE, *OTHER_SHAPES]):
        masked, mask, maps = make_data(*shape, mask_2d, seed=seed)
        with torch.no_grad():
            reference = model(masked, mask, maps).numpy()
        (image,) = session.run(None, {"masked_kspace": masked.numpy(), "mask": mask.numpy(),
                                      "sens_maps": maps.numpy()})
        assert image.shape == (shape[0], shape[2], shape[3], 2)
        assert psnr(reference, image) > 50.0, (shape, psnr(reference, image))


def test_matmul_variant_has_no_dft_op(exported):
    for kind in CONFIGS:
        _, _, paths = exported[kind]
        ops_dft = {node.op_type for node in onnx.load(str(paths["dft-op"])).graph.node}
        ops_mm = {node.op_type for node in onnx.load(str(paths["matmul"])).graph.node}
        assert "DFT" in ops_dft
        assert "DFT" not in ops_mm and "MatMul" in ops_mm  # runs on CUDA EP / TensorRT, which lack DFT


def test_exported_axes_are_symbolic(exported):
    _, _, paths = exported["recurrentvarnet"]
    model = onnx.load(str(paths["matmul"]))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    kspace, mask = dims["masked_kspace"], dims["mask"]
    assert all(isinstance(d, str) for d in kspace[:4]) and kspace[4] == 2
    assert dims["sens_maps"] == kspace
    assert mask[0] == kspace[0] and mask[3] == kspace[3] and mask[1:3] == [1, 1]


def test_default_dynamic_shapes_rule():
    shapes = default_dynamic_shapes((torch.zeros(2, 4, 8, 6, 2), torch.zeros(2, 1, 1, 6, 1)))
    dyn, static = torch.export.Dim.DYNAMIC, torch.export.Dim.STATIC
    assert shapes[0] == {0: dyn, 1: dyn, 2: dyn, 3: dyn, 4: static}
    assert shapes[1] == {0: dyn, 1: static, 2: static, 3: dyn, 4: static}


def test_static_export_and_session_preferences(tmp_path):
    model = build_model("rim", {"num_steps": 1, "hidden_channels": 4, "num_layers": 1, "fft_variant": "matmul"})
    inputs = make_data(1, 2, 8, 6, False)
    path = export_onnx(model, inputs, tmp_path / "static.onnx", dynamic=False)
    assert model.training  # export does not leave the module in eval mode
    shapes = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(str(path)).graph.input]
    assert shapes[0] == [1, 2, 8, 6, 2]
    # GPU providers first: unavailable ones are skipped (or fall back), and the active one is reported
    trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path / "trt"), "trt_fp16_enable": False}
    session, provider = create_session(path, trt_options=trt, threads=1)
    assert provider == session.get_providers()[0]
    if "TensorrtExecutionProvider" not in ort.get_available_providers() and \
            "CUDAExecutionProvider" not in ort.get_available_providers():
        assert provider == "CPUExecutionProvider"
    (image,) = session.run(None, {"masked_kspace": inputs[0].numpy(), "mask": inputs[1].numpy(),
                                  "sens_maps": inputs[2].numpy()})
    with torch.no_grad():
        assert psnr(model.eval()(*inputs).numpy(), image) > 50.0
    with pytest.raises(FileNotFoundError, match="not found"):
        create_session(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="unknown execution provider"):
        create_session(path, providers_preference=("GPU",))
    with pytest.raises(ValueError, match="threads"):
        create_session(path, threads=0)
