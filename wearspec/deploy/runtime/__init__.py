"""On-device runtime. Imports only numpy, tensorrt, cuda-python or onnxruntime: no torch, no timm.

Everything here runs on a Jetson with JetPack 6 (Python 3.10, TensorRT 10.3) as well as on a PC:

* :mod:`.schema` — the ``bundle.json`` format and its one parser (export validates with it too);
* :mod:`.base` — the backend interface, ``Backend.infer(windows (B, C, T) float32) -> probabilities (B, K)``;
* :mod:`.backends` — :func:`~.backends.load_backend` opens a bundle with ONNX Runtime (CPU) or a TensorRT
  engine;
* :mod:`.trt` — build a TensorRT engine from a bundle on the device and run it (tensorrt + cuda-python);
* :mod:`.bench` — trtexec-style latency/throughput measurement of any backend;
* :mod:`.stream` — continuous classification of a live or replayed sensor stream (:class:`~.stream.StreamConfig`);
* :mod:`.sources` — where the stream's samples come from: CSV/TSV or ``.npy`` replay, stdin.

Heavy optional modules (onnxruntime, tensorrt, cuda-python) are imported inside the classes that use them,
so ``import wearspec.deploy.runtime.stream`` needs only numpy.
"""
