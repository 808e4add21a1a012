"""ONNX export (atomic, dynamic batch) and an onnxruntime check that the outputs match PyTorch's."""

from __future__ import annotations

from leanvision.export.onnx import EXPORTERS, check_onnx, export_onnx, onnx_feed, onnx_session

__all__ = ["EXPORTERS", "check_onnx", "export_onnx", "onnx_feed", "onnx_session"]
