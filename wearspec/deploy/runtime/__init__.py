"""On-device runtime. Imports only numpy, tensorrt, cuda-python or onnxruntime: no torch, no timm.

Everything here runs on a Jetson with JetPack 6 (Python 3.10, TensorRT 10.3) as well as on a PC:

* :mod:`.backends` — read a deploy bundle, run it with ONNX Runtime (CPU) or a TensorRT engine behind one
  interface, ``Backend.infer(windows (B, C, T) float32) -> probabilities (B, K)``;
* :mod:`.trt` — build a TensorRT engine from a bundle on the device and run it (tensorrt + cuda-python);
* :mod:`.bench` — trtexec-style latency/throughput measurement of any backend;
* :mod:`.stream` — continuous classification of a live or replayed sensor stream.

Heavy optional modules (onnxruntime, tensorrt, cuda-python) are imported inside the classes that use them,
so ``import wearspec.deploy.runtime.stream`` needs only numpy.
"""
