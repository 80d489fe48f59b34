"""On-device runtime. Imports only numpy, tensorrt, cuda-python or onnxruntime: no torch, no timm."""
