"""Daphnet FoG reader: native SxxRyy.txt files → window store, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wearspec.config import load_config
from wearspec.data import prepare as prep
from wearspec.data.prepare import PrepareConfig
from wearspec.data.readers import daphnet
from wearspec.errors import WearspecError

FREQ, AMP = 1.5, 400.0  # trunk_x = 1000 + AMP·sin(2π·FREQ·t) mg


def make_txt(path: Path, seconds: float = 30.0, annotations=(0, 1, 2), seed: int = 0) -> None:
    """Write a Daphnet file: 64 Hz, time in whole ms (15/16 ms steps as in the real files)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 64)
    t_ms = np.round(np.arange(n) * 1000.0 / 64 + 15).astype(int)
    acc = rng.integers(-1000, 1000, size=(n, 9))
    acc[:, 6] = np.round(1000 + AMP * np.sin(2 * np.pi * FREQ * t_ms / 1000.0))
    ann = np.repeat(np.asarray(annotations), -(-n // len(annotations)))[:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.column_stack([t_ms, acc, ann])
    path.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=["window.rate=32", "window.length_s=5", "window.hop_s=5", *overrides])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "dataset_fog_release"
    make_txt(root / "dataset" / "S01R01.txt", seed=1)
    make_txt(root / "dataset" / "S01R02.txt", seconds=15.0, annotations=(1,), seed=2)
    make_txt(root / "dataset" / "S02R01.txt", seconds=15.0, annotations=(2,), seed=3)
    return root


def test_daphnet_store(dataset: Path, tmp_path: Path):
    store, _ = prep.prepare("daphnet", dataset, tmp_path / "out", cfg(), progress=False)
    assert store.channels == [f"{loc}_{a}" for loc in ("ankle", "thigh", "trunk") for a in "xyz"]
    assert store.rate == 32.0 and store.window == 160
    assert store.label_names == ["no_freeze", "freeze"]
    assert store.subject_names == ["S01", "S02"]
    assert store.recording_names == ["S01R01", "S01R02", "S02R01"]
    assert len(store) == 6 + 3 + 3
    assert store.labels.tolist() == [-1, -1, 0, 0, 1, 1] + [0] * 3 + [1] * 3


def test_daphnet_sensor_choice_and_values(dataset: Path, tmp_path: Path):
    c = cfg("daphnet.sensors=[trunk]")
    store, _ = prep.prepare("daphnet", dataset / "dataset", tmp_path / "out", c, progress=False)
    assert store.channels == ["trunk_x", "trunk_y", "trunk_z"]
    first = np.flatnonzero(store.recordings == 0)
    x = store.read_batch(first)[:, 0]
    t = store.starts[first][:, None] + np.arange(160) / 32.0
    ref = 1000 + AMP * np.sin(2 * np.pi * FREQ * t)
    np.testing.assert_allclose(x[1:-1], ref[1:-1], atol=10.0)  # whole-mg rounding, ms jitter
    (rec,) = list(daphnet.open_source(dataset / "dataset" / "S02R01.txt", cfg()).items)
    assert (rec.subject, rec.recording, rec.rate, rec.data.shape) == ("S02", "S02R01", 64.0, (9, 960))


def assert_fails(path: Path, out: Path, *needles: str, c: PrepareConfig | None = None) -> str:
    with pytest.raises(WearspecError) as e:
        prep.prepare("daphnet", path, out, c or cfg(), progress=False)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    assert not out.exists()
    return msg


def edit_line(path: Path, line: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = fn(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def test_daphnet_missing_and_empty(tmp_path: Path):
    assert_fails(tmp_path / "S01R01.txt", tmp_path / "out", "S01R01.txt", "not found")
    (tmp_path / "d").mkdir()
    assert_fails(tmp_path / "d", tmp_path / "out", "no SxxRyy.txt files")
    f = tmp_path / "d" / "S01R01.txt"
    f.write_text("")
    assert_fails(f, tmp_path / "out", "S01R01.txt", "empty file")


def test_daphnet_truncated(tmp_path: Path):
    f = tmp_path / "S01R01.txt"
    make_txt(f, seconds=10.0)
    f.write_text(f.read_text()[:-12])
    assert_fails(f, tmp_path / "out", "S01R01.txt, line 640", "expected 11", "truncated")


def test_daphnet_wrong_columns(tmp_path: Path):
    f = tmp_path / "S01R01.txt"
    make_txt(f, seconds=10.0)
    edit_line(f, 3, lambda s: s.rsplit(" ", 1)[0])
    assert_fails(f, tmp_path / "out", "S01R01.txt, line 3", "expected 11 space-separated values, got 10")


def test_daphnet_non_numeric(tmp_path: Path):
    f = tmp_path / "S01R01.txt"
    make_txt(f, seconds=10.0)
    edit_line(f, 99, lambda s: " ".join(v if i != 1 else "12,5" for i, v in enumerate(s.split())))
    assert_fails(f, tmp_path / "out", "S01R01.txt, line 99, column 2 (ankle_x)", "expected a number", "'12,5'")


def test_daphnet_unknown_annotation(tmp_path: Path):
    f = tmp_path / "S01R01.txt"
    make_txt(f, seconds=10.0)
    edit_line(f, 200, lambda s: s.rsplit(" ", 1)[0] + " 3")
    assert_fails(f, tmp_path / "out", "S01R01.txt, line 200, column 11 (annotation)", "unknown annotation '3'")


def test_daphnet_inconsistent_rate(tmp_path: Path):
    f = tmp_path / "S01R01.txt"
    make_txt(f, seconds=10.0)
    lines = f.read_text().splitlines()
    f.write_text("".join(f"{10 * i} " + ln.split(" ", 1)[1] + "\n" for i, ln in enumerate(lines)))  # 100 Hz clock
    assert_fails(f, tmp_path / "out", "S01R01.txt", "inconsistent sampling rate")


def test_daphnet_short_recording_and_bad_sensor(tmp_path: Path):
    f = tmp_path / "S01R01.txt"
    make_txt(f, seconds=2.0)
    assert_fails(f, tmp_path / "out", "S01R01.txt", "shorter than one window")
    assert_fails(f, tmp_path / "out", "daphnet.sensors", "wrist", c=cfg("daphnet.sensors=[wrist]"))
