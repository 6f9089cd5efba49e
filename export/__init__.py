"""Exporter: checkpoint -> bundle (manifest + ONNX encoder/head, optional TensorRT engines)."""
