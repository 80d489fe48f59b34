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


@pytest.fixture
def sdpa_calls(monkeypatch) -> dict:
    """Counts the calls of ``F.scaled_dot_product_attention`` (``calls["n"]``) while the test runs."""
    import torch

    calls = {"n": 0}
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls["n"] += 1
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    return calls


def expect_prepare_error(reader, path, out, config, *fragments: str) -> str:
    """``prepare`` fails with a one-line WearspecError holding every fragment, leaving nothing behind."""
    from wearspec.data.prepare import prepare
    from wearspec.errors import WearspecError

    with pytest.raises(WearspecError) as info:
        prepare(reader, path, out, config, progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    return msg


def write_text_file(path, text: str, gz: bool = False):
    """Write ``text`` to ``path``, gzip-compressed when ``gz`` (reader fixtures in their native formats)."""
    import gzip

    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def synthetic_store(tmp_path_factory, name: str, subjects: int = 4, minutes: float = 1.0):
    """A small synthetic window store (``prepare synthetic``) in a fresh folder: the module fixtures' data."""
    from wearspec.config import load_config
    from wearspec.data.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp(name) / "store"
    prepare("synthetic", None, out, load_config(PrepareConfig, None, [f"synthetic.subjects={subjects}",
                                                                      f"synthetic.minutes_per_subject={minutes}"]))
    return out
