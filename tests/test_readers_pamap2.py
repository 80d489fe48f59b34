"""PAMAP2 reader: native .dat files → window store, and one test per kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wearspec.config import load_config
from wearspec.data import prepare as prep
from wearspec.data.prepare import PrepareConfig
from wearspec.data.readers import chunks, pamap2
from wearspec.errors import WearspecError

FREQ = 2.0  # Hz of the sinusoid on hand_acc16_x
AMP = 3.0


def make_dat(path: Path, seconds: float = 30.0, t0: float = 5.0, activities=(0, 4, 24), seed: int = 0) -> np.ndarray:
    """Write a PAMAP2 .dat file: 100 Hz, hand_acc16_x = AMP·sin(2π·FREQ·t), activities in equal thirds."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 100))
    t = np.round(t0 + np.arange(n) / 100.0, 2)
    a = rng.normal(size=(n, 54))
    a[:, 0] = t
    a[:, 1] = np.repeat(np.asarray(activities), -(-n // len(activities)))[:n]
    a[:, 2] = np.nan
    a[::10, 2] = 100.0  # heart rate at ~9 Hz, NaN elsewhere (as in the real files)
    a[:, 4] = AMP * np.sin(2 * np.pi * FREQ * t)  # hand acc16 x
    a[5::200, 10] = np.nan  # dropped packets on hand gyro x: left for the NaN policy
    a[:, 50:54] = 1.0  # ankle orientation (invalid in the dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in a:
            values = " ".join("NaN" if np.isnan(v) else f"{v:.6f}" for v in row[2:])
            f.write(f"{row[0]:.2f} {int(row[1])} {values}\n")
    return a


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=["window.rate=50", "window.length_s=5", "window.hop_s=5", *overrides])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "PAMAP2_Dataset"
    make_dat(root / "Protocol" / "subject101.dat", seed=1)
    make_dat(root / "Protocol" / "subject102.dat", seconds=20.0, activities=(1, 2), seed=2)
    make_dat(root / "Optional" / "subject101.dat", seconds=10.0, activities=(9,), seed=3)
    return root


def test_pamap2_store(dataset: Path, tmp_path: Path):
    store, reused = prep.prepare("pamap2", dataset, tmp_path / "out", cfg(), progress=False)
    assert not reused
    assert store.channels == [f"hand_{s}_{a}" for s in ("acc16", "gyro") for a in "xyz"]
    assert store.rate == 50.0 and store.window == 250
    assert store.label_names == pamap2.LABEL_NAMES and len(store.label_names) == 18
    assert store.subject_names == ["101", "102"]
    assert store.recording_names == ["subject101", "subject102"]  # Optional/ not read by default
    assert len(store) == 6 + 4
    s101 = store.subjects == 0
    names = np.array(store.label_names + ["-"])
    # thirds of 10 s: transient (0 → unlabelled), walking (4), rope jumping (24)
    assert list(names[store.labels[s101]]) == ["-", "-", "walking", "walking", "rope_jumping", "rope_jumping"]
    assert list(names[store.labels[~s101]]) == ["lying", "lying", "sitting", "sitting"]
    np.testing.assert_allclose(store.starts[s101], 5.0 + 5.0 * np.arange(6))
    # the sinusoid survives resampling 100 → 50 Hz (away from the recording's two ends)
    x = store.read_batch(np.flatnonzero(s101))[:, 0]
    t = store.starts[s101][:, None] + np.arange(250) / 50.0
    ref = AMP * np.sin(2 * np.pi * FREQ * t)
    np.testing.assert_allclose(x[1:-1], ref[1:-1], atol=2e-2)
    assert np.isfinite(store.read_batch(range(len(store)))).all()  # NaN interpolated
    # same inputs and settings: the store is reused
    assert prep.prepare("pamap2", dataset, tmp_path / "out", cfg(), progress=False)[1]


def test_pamap2_channels_optional_and_single_file(dataset: Path, tmp_path: Path):
    c = cfg("pamap2.imus=[ankle,chest]", "pamap2.sensors=[temperature,mag]", "pamap2.include_optional=true")
    store, _ = prep.prepare("pamap2", dataset, tmp_path / "out", c, progress=False)
    assert store.channels == [
        "ankle_temperature", "ankle_mag_x", "ankle_mag_y", "ankle_mag_z",
        "chest_temperature", "chest_mag_x", "chest_mag_y", "chest_mag_z",
    ]  # fmt: skip
    assert "subject101_optional" in store.recording_names
    assert "watching_tv" in {store.label_names[i] for i in store.labels if i >= 0}
    src = pamap2.open_source(dataset / "Optional", cfg())
    assert [r.recording for r in src.items] == ["subject101_optional"]
    one = pamap2.open_source(dataset / "Protocol" / "subject102.dat", cfg())
    (rec,) = list(one.items)
    assert rec.subject == "102" and rec.data.shape == (6, 2000) and rec.rate == 100.0


def test_pamap2_small_chunks_give_the_same_data(dataset: Path, monkeypatch):
    whole = [r.data for r in pamap2.open_source(dataset / "Protocol", cfg()).items]
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 997)
    pieces = [r.data for r in pamap2.open_source(dataset / "Protocol", cfg()).items]
    for a, b in zip(whole, pieces):
        np.testing.assert_array_equal(a, b)


def test_pamap2_gap_splits_recording(tmp_path: Path):
    f = tmp_path / "subject105.dat"
    a = make_dat(f, seconds=20.0, activities=(3,))
    a[1000:, 0] += 30.0  # 30 s gap after 10 s
    lines = f.read_text().splitlines()
    lines[1000:] = [f"{t:.2f}" + ln[ln.index(" "):] for t, ln in zip(a[1000:, 0], lines[1000:])]
    f.write_text("\n".join(lines) + "\n")
    recs = list(pamap2.open_source(f, cfg()).items)
    assert [r.recording for r in recs] == ["subject105", "subject105_part2"]
    assert [r.data.shape[1] for r in recs] == [1000, 1000]
    assert recs[1].start == pytest.approx(45.0)


# ---- bad input -----------------------------------------------------------------------------------


def assert_fails(path: Path, out: Path, *needles: str, c: PrepareConfig | None = None):
    with pytest.raises(WearspecError) as e:
        prep.prepare("pamap2", path, out, c or cfg(), progress=False)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    assert "\n" not in msg
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return msg


def edit_line(path: Path, line: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = fn(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def test_pamap2_missing_input(tmp_path: Path):
    assert_fails(tmp_path / "nope", tmp_path / "out", "nope", "not found")
    with pytest.raises(WearspecError, match="not found"):
        pamap2.open_source(tmp_path / "nope", cfg())
    (tmp_path / "empty_dir").mkdir()
    assert_fails(tmp_path / "empty_dir", tmp_path / "out", "empty_dir", "no subjectNNN.dat")


def test_pamap2_empty_file(tmp_path: Path):
    f = tmp_path / "subject101.dat"
    f.write_text("")
    assert_fails(f, tmp_path / "out", "subject101.dat", "empty file")
    f.write_text("\n\n")
    assert_fails(f, tmp_path / "out", "subject101.dat", "empty file")


def test_pamap2_truncated_last_line(tmp_path: Path):
    f = tmp_path / "subject101.dat"
    make_dat(f, seconds=10.0)
    text = f.read_text()
    f.write_text(text[: len(text) - 200])  # cut inside the last line
    assert_fails(f, tmp_path / "out", "subject101.dat, line 1000", "expected 54 space-separated values", "truncated")


def test_pamap2_wrong_column_count(tmp_path: Path):
    f = tmp_path / "subject101.dat"
    make_dat(f, seconds=10.0)
    edit_line(f, 17, lambda s: s + " 1.0")
    assert_fails(f, tmp_path / "out", "subject101.dat, line 17", "expected 54", "got 55")


def test_pamap2_non_numeric(tmp_path: Path):
    f = tmp_path / "subject101.dat"
    make_dat(f, seconds=10.0)
    edit_line(f, 321, lambda s: " ".join(v if i != 4 else "abc" for i, v in enumerate(s.split())))
    assert_fails(f, tmp_path / "out", "subject101.dat, line 321, column 5 (hand_acc16_x)", "expected a number", "'abc'")


def test_pamap2_unknown_activity(tmp_path: Path):
    f = tmp_path / "subject101.dat"
    make_dat(f, seconds=10.0, activities=(1,))
    edit_line(f, 42, lambda s: s.split(" ", 2)[0] + " 8 " + s.split(" ", 2)[2])
    assert_fails(f, tmp_path / "out", "subject101.dat, line 42, column 2 (activityID)", "unknown activityID '8'")


def test_pamap2_inconsistent_rate(tmp_path: Path):
    f = tmp_path / "subject101.dat"
    a = make_dat(f, seconds=10.0)
    lines = f.read_text().splitlines()
    f.write_text("\n".join(f"{5 + 0.02 * i:.2f}" + ln[ln.index(" "):] for i, ln in enumerate(lines)) + "\n")
    assert len(a) == len(lines)
    assert_fails(f, tmp_path / "out", "subject101.dat", "inconsistent sampling rate", "50 Hz", "100 Hz")


def test_pamap2_time_goes_backwards(tmp_path: Path):
    f = tmp_path / "subject101.dat"
    make_dat(f, seconds=10.0)
    edit_line(f, 500, lambda s: "1.00" + s[s.index(" "):])
    assert_fails(f, tmp_path / "out", "subject101.dat, line 500", "timestamps must increase")


def test_pamap2_recording_shorter_than_window(tmp_path: Path):
    f = tmp_path / "subject101.dat"
    make_dat(f, seconds=3.0)
    assert_fails(f, tmp_path / "out", "subject101.dat", "shorter than one window")
    store, _ = prep.prepare("pamap2", f, tmp_path / "out", cfg("window.short_policy=pad"), progress=False)
    assert len(store) == 1


def test_pamap2_bad_config(tmp_path: Path, dataset: Path):
    assert_fails(dataset, tmp_path / "out", "pamap2.imus", "wrist", c=cfg("pamap2.imus=[wrist]"))
    assert_fails(dataset, tmp_path / "out", "pamap2.sensors", "orientation", c=cfg("pamap2.sensors=[orientation]"))
    assert_fails(dataset, tmp_path / "out", "pamap2.sensors", c=cfg("pamap2.sensors=[]"))
