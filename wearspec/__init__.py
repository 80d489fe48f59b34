"""wearspec: self-supervised spectrogram transformers for wearable sensors.

Stages: ``data`` (readers, window store, spectrogram front end, augmentations) → ``models`` →
``ssl`` | ``evaluate`` | ``finetune`` → ``deploy``. Import the stage you need; this package
imports nothing heavy at top level.
"""

__version__ = "0.1.0"

from wearspec.errors import WearspecError  # noqa: E402  (light, no torch)

__all__ = ["WearspecError", "__version__"]
