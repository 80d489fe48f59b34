"""The inference backend interface that the ONNX Runtime and TensorRT backends share.

Every backend has the same small interface (:class:`Backend`):

* ``infer(windows)``: ``(B, C, T)`` float32 → ``(B, K)`` float32 class probabilities; batches larger than the
  backend's ``max_batch`` are split, smaller than ``min_batch`` padded;
* ``input_shape`` ``(C, T)``, ``labels`` (K names), ``spec`` (the bundle's
  :class:`~wearspec.deploy.runtime.schema.BundleSpec`, when known).

A module of its own so that each backend (:mod:`.backends` for ONNX Runtime, :mod:`.trt` for TensorRT) imports
it without importing the other. Only numpy is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from wearspec.deploy.runtime.schema import BundleSpec
from wearspec.errors import WearspecError

ORT_PRECISIONS = ("fp32", "int8")
TRT_PRECISIONS = ("fp16", "int8", "fp32")
BACKENDS = ("onnxruntime", "tensorrt")


class Backend:
    """Common interface of the inference backends. Subclasses implement :meth:`_infer_batch`."""

    name = "backend"
    precision = "fp32"
    min_batch = 1
    max_batch: int | None = None    # None: any batch size

    def __init__(self, input_shape: tuple[int, int], labels: Sequence[str], spec: BundleSpec | None = None):
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        self.labels = tuple(labels)
        self.spec = spec

    def infer(self, windows: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of raw windows.

        windows: (B, C, T) float array (converted to contiguous float32). Returns (B, K) float32.
        """
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim == 2 and x.shape == self.input_shape:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != self.input_shape:
            raise WearspecError(
                f"{self.name}: expected windows of shape (B, {self.input_shape[0]}, {self.input_shape[1]}) "
                f"(batch, channels, samples), got {tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        step = self.max_batch or n
        parts = []
        for start in range(0, n, step):
            part = x[start:start + step]
            short = self.min_batch - part.shape[0]
            if short > 0:   # pad up to the engine's smallest batch, drop the padding afterwards
                part = np.concatenate([part, np.zeros((short,) + part.shape[1:], np.float32)])
            parts.append(np.asarray(self._infer_batch(part), dtype=np.float32)[:part.shape[0] - max(short, 0)])
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if out.shape != (n, len(self.labels)):
            raise WearspecError(f"{self.name}: model returned shape {tuple(out.shape)}, expected "
                                f"({n}, {len(self.labels)}) (batch, classes)")
        return out

    def _infer_batch(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        """Backend facts for reports and benchmark headers."""
        return {"backend": self.name, "precision": self.precision, "input_shape": list(self.input_shape),
                "classes": len(self.labels), "max_batch": self.max_batch}

    def close(self) -> None:
        """Release resources (device memory, sessions). Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_engine_path(bundle_dir: str | os.PathLike, precision: str) -> Path:
    """Where ``wearspec engine build`` writes the engine for a precision: ``BUNDLE/model.<precision>.engine``."""
    return Path(bundle_dir) / f"model.{precision}.engine"
