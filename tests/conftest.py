"""Test isolation: every test session writes caches, temp files and wandb runs under tmp folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="wearspec-tests-"))
for _name, _sub in (("HOME", "home"), ("TMPDIR", "tmp"), ("XDG_CACHE_HOME", "cache"), ("WANDB_DIR", "wandb"),
                    ("MPLCONFIGDIR", "mpl")):
    (_ROOT / _sub).mkdir(parents=True, exist_ok=True)
    os.environ[_name] = str(_ROOT / _sub)
os.environ["WANDB_MODE"] = "offline"
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("OMP_NUM_THREADS", "2")
tempfile.tempdir = os.environ["TMPDIR"]

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
