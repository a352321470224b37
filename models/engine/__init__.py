"""ONNX export and ONNX Runtime sessions (provider choice TensorRT > CUDA > CPU)."""

from models.engine.onnx_export import default_dynamic_shapes, export_onnx
from models.engine.session import DEFAULT_PROVIDERS, create_session

__all__ = ["DEFAULT_PROVIDERS", "create_session", "default_dynamic_shapes", "export_onnx"]
