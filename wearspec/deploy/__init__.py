"""Deployment: ONNX export, INT8 Q/DQ, TensorRT engines, streaming runtime."""
