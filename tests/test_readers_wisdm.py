"""WISDM reader: v1.1 raw text (with its quirks) and the 2019 layout → window store; bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig
from wearspec.data import prepare as prep
from wearspec.data.readers import wisdm
from wearspec.errors import WearspecError

FREQ, AMP = 1.0, 4.0  # x = AMP·sin(2π·FREQ·k/20) m/s² for sample k of a run


def records(user, activity, seconds: float, t0_ns: int, seed: int = 0, jitter_ms: float = 8.0) -> list[str]:
    """One run of WISDM records at 20 Hz nominal, with jittered timestamps (as in the real data)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 20)
    k = np.arange(n)
    t = t0_ns + (k * 50e6 + rng.uniform(-jitter_ms, jitter_ms, n) * 1e6).astype(np.int64)
    x = AMP * np.sin(2 * np.pi * FREQ * k / 20)
    yz = rng.normal(size=(n, 2)) + [9.8, 0]
    return [f"{user},{activity},{ti},{xi:.6f},{yi:.6f},{zi:.6f};" for ti, xi, (yi, zi) in zip(t, x, yz)]


def write_v11(path: Path) -> None:
    """User 33 jogging then walking, user 7 sitting; with the quirks of the real file."""
    lines = (
        records(33, "Jogging", 20, 49105962326000, seed=1)
        + records(33, "Walking", 15, 49125962326000, seed=2)
        + records(7, "Sitting", 10, 1000000000000, seed=3)
    )
    lines[5] = lines[5] + lines[6]  # two records on one line
    del lines[6]
    lines[10] = lines[10][:-1] + ",;"  # trailing empty field
    lines[20] = lines[20].rsplit(",", 1)[0] + ",;"  # empty z value: missing sample
    lines.insert(30, "")  # blank line
    lines.insert(40, "33,Jogging,0,0,0,0;")  # timestamp 0: dropped
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=["window.rate=20", "window.length_s=5", "window.hop_s=5", *overrides])


def test_wisdm_v11_store(tmp_path: Path):
    f = tmp_path / "WISDM_ar_v1.1" / "WISDM_ar_v1.1_raw.txt"
    write_v11(f)
    with pytest.warns(UserWarning, match="dropped 1 records with timestamp 0"):
        store, _ = prep.prepare("wisdm", f.parent, tmp_path / "out", cfg(), progress=False)
    assert store.channels == ["acc_x", "acc_y", "acc_z"]
    assert store.label_names == ["walking", "jogging", "upstairs", "downstairs", "sitting", "standing"]
    assert store.subject_names == ["33", "7"]
    assert store.recording_names == ["33_jogging_0", "33_walking_0", "7_sitting_0"]
    assert len(store) == 4 + 3 + 2
    assert [store.label_names[i] for i in store.labels] == ["jogging"] * 4 + ["walking"] * 3 + ["sitting"] * 2
    x = store.read_batch(np.flatnonzero(store.recordings == 1))[:, 0]  # walking: no quirks inside
    np.testing.assert_allclose(x.ravel(), AMP * np.sin(2 * np.pi * FREQ * np.arange(300) / 20), atol=1e-5)
    assert np.isfinite(store.read_batch(range(len(store)))).all()


def test_wisdm_splits_at_gap_and_clock_restart(tmp_path: Path):
    f = tmp_path / "WISDM_ar_v1.1_raw.txt"
    lines = (
        records(1, "Upstairs", 10, 5_000_000_000_000)
        + records(1, "Upstairs", 10, 5_000_000_000_000 + 10_000_000_000 + 3_000_000_000)  # 3 s gap
        + records(1, "Upstairs", 10, 1_000_000_000_000)  # clock goes back
    )
    f.write_text("\n".join(lines) + "\n")
    recs = list(wisdm.open_source(f, cfg()).items)
    assert [r.recording for r in recs] == ["1_upstairs_0", "1_upstairs_1", "1_upstairs_2"]
    assert [r.data.shape[1] for r in recs] == [200, 200, 200]
    assert {r.rate for r in recs} == {20.0}


def test_wisdm_2019_layout(tmp_path: Path):
    root = tmp_path / "wisdm-dataset"
    accel = root / "raw" / "phone" / "accel"
    accel.mkdir(parents=True)
    (accel / "data_1600_accel_phone.txt").write_text(
        "\n".join(records(1600, "A", 10, 252207666810782) + records(1600, "D", 10, 252217666810782)) + "\n"
    )
    (accel / "data_1601_accel_phone.txt").write_text("\n".join(records(1601, "O", 10, 10**14)) + "\n")
    gyro = root / "raw" / "phone" / "gyro"
    gyro.mkdir(parents=True)
    (gyro / "data_1600_gyro_phone.txt").write_text("\n".join(records(1600, "S", 10, 10**14)) + "\n")
    store, _ = prep.prepare("wisdm", root, tmp_path / "out", cfg(), progress=False)
    assert store.channels == ["acc_x", "acc_y", "acc_z"]
    assert len(store.label_names) == 18 and store.label_names[0] == "walking"
    assert store.subject_names == ["1600", "1601"]
    assert [store.label_names[i] for i in store.labels] == ["walking"] * 2 + ["sitting"] * 2 + ["playing_catch"] * 2
    assert store.meta["sensor"] == "accel" and store.meta["device"] == "phone"
    src = wisdm.open_source(gyro, cfg())
    assert src.channels == ["gyro_x", "gyro_y", "gyro_z"]
    assert [r.recording for r in src.items] == ["1600_folding_clothes_0"]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in (accel / "data_1600_accel_phone.txt", gyro / "data_1600_gyro_phone.txt"):
        (mixed / p.name).write_bytes(p.read_bytes())
    with pytest.raises(WearspecError, match="several sensors"):
        wisdm.open_source(mixed, cfg())


# ---- bad input -----------------------------------------------------------------------------------


def assert_fails(path: Path, out: Path, *needles: str, c: PrepareConfig | None = None) -> str:
    with pytest.raises(WearspecError) as e:
        prep.prepare("wisdm", path, out, c or cfg(), progress=False)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    assert not out.exists()
    return msg


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    f = tmp_path / "WISDM_ar_v1.1_raw.txt"
    f.write_text("\n".join(records(5, "Walking", 10, 10**13)) + "\n")
    return f


def edit_line(path: Path, line: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = fn(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def test_wisdm_missing_and_empty(tmp_path: Path):
    assert_fails(tmp_path / "WISDM_ar_v1.1_raw.txt", tmp_path / "out", "WISDM_ar_v1.1_raw.txt", "not found")
    (tmp_path / "d").mkdir()
    assert_fails(tmp_path / "d", tmp_path / "out", "no WISDM files found")
    f = tmp_path / "d" / "WISDM_ar_v1.1_raw.txt"
    f.write_text("")
    assert_fails(f, tmp_path / "out", "WISDM_ar_v1.1_raw.txt", "empty file")
    f.write_text(";\n\n;;\n")
    assert_fails(f, tmp_path / "out", "WISDM_ar_v1.1_raw.txt", "no WISDM records")


def test_wisdm_malformed_record(raw: Path, tmp_path: Path):
    edit_line(raw, 12, lambda s: s.rsplit(",", 1)[0] + ";")  # z missing entirely: 5 fields
    assert_fails(raw, tmp_path / "out", "WISDM_ar_v1.1_raw.txt, line 12", "expected 6 comma-separated fields, got 5")


def test_wisdm_extra_field(raw: Path, tmp_path: Path):
    edit_line(raw, 13, lambda s: s[:-1] + ",1.0;")
    assert_fails(raw, tmp_path / "out", "line 13", "expected 6 comma-separated fields, got 7")


def test_wisdm_truncated(raw: Path, tmp_path: Path):
    raw.write_text(raw.read_text()[:-25])
    assert_fails(raw, tmp_path / "out", "line 200", "truncated")


def test_wisdm_non_numeric(raw: Path, tmp_path: Path):
    edit_line(raw, 50, lambda s: ",".join(v if i != 3 else "1..5" for i, v in enumerate(s.split(","))))
    assert_fails(raw, tmp_path / "out", "WISDM_ar_v1.1_raw.txt, line 50, column 4 (x)", "expected a number, got '1..5'")


def test_wisdm_bad_user_and_timestamp(raw: Path, tmp_path: Path):
    edit_line(raw, 3, lambda s: "five" + s[1:])
    assert_fails(raw, tmp_path / "out", "line 3, column 1 (user)", "expected an integer, got 'five'")
    edit_line(raw, 3, lambda s: "5" + s[4:])
    edit_line(raw, 4, lambda s: s.replace(s.split(",")[2], "-5"))
    assert_fails(raw, tmp_path / "out", "line 4, column 3 (timestamp)", "'-5'")


def test_wisdm_unknown_activity(raw: Path, tmp_path: Path):
    edit_line(raw, 77, lambda s: s.replace("Walking", "Dancing"))
    where = "WISDM_ar_v1.1_raw.txt, line 77, column 2 (activity)"
    assert_fails(raw, tmp_path / "out", where, "unknown activity 'Dancing'")


def test_wisdm_inconsistent_rate(tmp_path: Path):
    f = tmp_path / "WISDM_ar_v1.1_raw.txt"
    lines = records(5, "Walking", 10, 10**13)
    # timestamps in ms instead of ns: every interval is 50 ns → far from 20 Hz
    f.write_text("\n".join(ln.replace(ln.split(",")[2], str(int(ln.split(",")[2]) // 10**6)) for ln in lines) + "\n")
    assert_fails(f, tmp_path / "out", "WISDM_ar_v1.1_raw.txt", "inconsistent sampling rate", "20 Hz")


def test_wisdm_short_recording(tmp_path: Path):
    f = tmp_path / "WISDM_ar_v1.1_raw.txt"
    f.write_text("\n".join(records(5, "Standing", 3, 10**13)) + "\n")
    assert_fails(f, tmp_path / "out", "WISDM_ar_v1.1_raw.txt", "shorter than one window")
    store, _ = prep.prepare("wisdm", f, tmp_path / "out", cfg("window.short_policy=skip", "window.length_s=2",
                                                               "window.hop_s=1"), progress=False)
    assert len(store) == 2
