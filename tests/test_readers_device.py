"""The device reader: .cwa files written from the public format description, read back through actfast and
through the whole prepare path."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from conftest import expect_prepare_error
from devicefiles import write_cwa, write_geneactiv_bin, write_gt3x
from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig, prepare

actfast = pytest.importorskip("actfast")
START = datetime(2024, 5, 1, 10, 0, 0, 250000)


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=["window.length_s=2", "window.hop_s=1", *overrides])


def wrist(n: int, rate: float, freq: float = 1.0) -> np.ndarray:
    """(n, 3) g: a sine on x, 0.5 g on y, gravity on z."""
    t = np.arange(n) / rate
    return np.stack([0.8 * np.sin(2 * np.pi * freq * t), np.full(n, 0.5), np.ones(n)], axis=1)


def test_cwa_written_from_the_spec_reads_back_through_actfast(tmp_path):
    acc = wrist(1600, 100.0)
    f = write_cwa(tmp_path / "P01.cwa", acc, 100.0, START, device_id=0x1234567)
    res = actfast.read(str(f))
    assert res["format"] == "Axivity CWA" and res["metadata"]["device"]["hardware_type"] == "AX3"
    assert res["metadata"]["device"]["device_id"] == str(0x1234567)
    ts = res["timeseries"]["high_frequency"]
    np.testing.assert_allclose(ts["acceleration"], acc, atol=1 / 256)
    assert ts["datetime"][0] == np.datetime64("2024-05-01T10:00:00.250", "ns").astype(np.int64)
    gyro = 100 * np.stack([np.cos(np.arange(800) / 7), np.zeros(800), np.ones(800)], axis=1)
    res = actfast.read(str(write_cwa(tmp_path / "P02.cwa", acc[:800], 50.0, START, gyro_dps=gyro)))
    assert res["metadata"]["device"]["hardware_type"] == "AX6"
    np.testing.assert_allclose(res["timeseries"]["high_frequency"]["gyroscope"], gyro, atol=250 / 32768)


def test_folder_of_cwa_files_to_store(tmp_path):
    folder = tmp_path / "cohort"
    (folder / "site2").mkdir(parents=True)
    write_cwa(folder / "P01_wrist.cwa", wrist(3200, 100.0), 100.0, START)
    write_cwa(folder / "site2" / "P02_wrist.cwa", wrist(2400, 100.0, 2.0), 100.0, START, device_id=7)
    store, _ = prepare("device", folder, tmp_path / "out", cfg("window.rate=50"), progress=False)
    assert store.channels == ["ax", "ay", "az"] and store.rate == 50
    assert store.subject_names == ["P01", "P02"] and store.recording_names == ["P01_wrist", "P02_wrist"]
    assert 52 <= len(store) <= 54  # 31 + 23 windows; the measured rate (≈100 Hz) may cost the last one
    w = store.read(3)  # P01, from 3 s: resampled to 50 Hz
    np.testing.assert_allclose(w[0, 10:-10], 0.8 * np.sin(2 * np.pi * (3 + np.arange(100) / 50))[10:-10], atol=0.02)
    np.testing.assert_allclose(w[2], 1.0, atol=0.01)
    dev = store.meta["devices"]
    assert dev["P01_wrist.cwa"]["format"] == "Axivity CWA" and dev["P02_wrist.cwa"]["device_id"] == "7"
    assert dev["P01_wrist.cwa"]["first_sample"].startswith("2024-05-01T10:00:00.25")
    assert abs(dev["P01_wrist.cwa"]["parts"][0]["rate"] - 100.0) < 0.1


def test_ax6_gyroscope_gap_and_subject_mapping(tmp_path):
    n = 40 * 30
    gyro = 50 * np.stack([np.sin(np.arange(n) / 9), np.zeros(n), np.ones(n)], axis=1)
    write_cwa(tmp_path / "dev_0042.cwa", wrist(n, 50.0), 50.0, START, gyro_dps=gyro, gap_after=14, gap_s=30.0)
    (tmp_path / "subjects.csv").write_text("file,subject\ndev_0042.cwa,alice\n")
    store, _ = prepare("device", tmp_path, tmp_path / "out",
                       cfg("window.rate=50", "device.gyroscope=true", "device.subjects_csv=subjects.csv"),
                       progress=False)
    assert store.channels == ["ax", "ay", "az", "gx", "gy", "gz"]
    assert store.subject_names == ["alice"] and store.recording_names == ["dev_0042#0", "dev_0042#1"]
    first = store.starts[store.recordings == 0]
    second = store.starts[store.recordings == 1]
    assert first.max() + 2 <= 12.0 + 1e-6 and second.min() >= 12.0 + 30.0 - 0.05  # no window straddles the gap
    np.testing.assert_allclose(store.read(0)[5], 50.0, atol=0.05)


def test_device_errors(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    expect_prepare_error("device", tmp_path / "empty", out, cfg(), "no .cwa, .gt3x or .bin files")
    f = write_cwa(tmp_path / "P01.cwa", wrist(800, 100.0), 100.0, START)
    expect_prepare_error("device", f, out, cfg("device.gyroscope=true"), "P01.cwa", "no gyroscope")
    expect_prepare_error("device", f, out, cfg("device.subject_pattern=^S\\d+"), "P01.cwa", "subject_pattern")
    raw = bytearray(f.read_bytes())
    raw[1024 + 512 * 3 + 40] ^= 0xFF  # breaks that sector's checksum
    f.write_bytes(bytes(raw))
    expect_prepare_error("device", f, out, cfg(), "P01.cwa", "cannot read as a .cwa device file", "checksum")
    (tmp_path / "notes.md").write_text("x")
    expect_prepare_error("device", tmp_path / "notes.md", out, cfg(), "notes.md", "expected a device file")
    (tmp_path / "list.txt").write_text("P01.cwa\nP02.cwa\n")
    expect_prepare_error("device", tmp_path / "list.txt", out, cfg(), "list.txt, line 2", "P02.cwa not found")


@pytest.mark.parametrize("suffix,fmt", [(".bin", "GeneActiv BIN"), (".gt3x", "Actigraph GT3X"), (".cwa", "Axivity CWA")])
def test_each_format_through_prepare(tmp_path, suffix, fmt):
    rate = 30 if suffix == ".gt3x" else 50
    acc = wrist(rate * 20, float(rate), 0.5)
    f = tmp_path / f"S07_left{suffix}"
    if suffix == ".bin":
        write_geneactiv_bin(f, acc, float(rate), START.replace(microsecond=0), per_page=100)
    elif suffix == ".gt3x":
        write_gt3x(f, acc, rate, START.replace(microsecond=0))
    else:
        write_cwa(f, acc, float(rate), START)
    store, _ = prepare("device", f, tmp_path / "out", cfg(f"window.rate={rate}"), progress=False)
    assert store.subject_names == ["S07"] and store.meta["devices"][f.name]["format"] == fmt
    assert 18 <= len(store) <= 19
    x = store.read(4)  # from 4 s
    expected = 0.8 * np.sin(2 * np.pi * 0.5 * (4 + np.arange(2 * rate) / rate))
    np.testing.assert_allclose(x[0], expected, atol=0.02)
    np.testing.assert_allclose(x[1:], np.broadcast_to([[0.5], [1.0]], x[1:].shape), atol=0.01)


def test_calibration_and_nonwear_recorded_in_the_manifest(tmp_path):
    rate, rng = 25.0, np.random.default_rng(0)
    parts = []
    for k in range(40):  # still in many orientations (miscalibrated by 0.04 g on x), then a still hour
        g = rng.normal(size=3)
        parts.append(np.tile(g / np.linalg.norm(g) - [0.04, 0, 0], (int(12 * rate), 1)))
        parts.append(rng.normal(scale=0.4, size=(int(12 * rate), 3)))
    parts.append(np.tile([0.0, 0.0, 1.0], (int(3600 * rate), 1)) + rng.normal(scale=0.002, size=(int(3600 * rate), 3)))
    acc = np.clip(np.concatenate(parts), -7.9, 7.9)
    f = write_cwa(tmp_path / "P09.cwa", acc, rate, START)
    store, _ = prepare("device", f, tmp_path / "out",
                       cfg("window.rate=25", "window.length_s=10", "window.hop_s=10", "device.calibrate=true",
                           "device.nonwear=drop", "device.nonwear_window_s=1800"), progress=False)
    info = store.meta["devices"]["P09.cwa"]
    assert info["calibration"]["applied"] and abs(info["calibration"]["offset_g"][0] - 0.04) < 0.01
    (begin, end), = info["nonwear"]["periods_s"]
    assert 960 <= begin <= 960 + 450 and end > 960 + 3500  # found on a grid of a quarter window
    inside = (store.starts + 10 > begin + 0.5) & (store.starts < end)
    assert not inside.any() and (store.starts < begin).sum() > 100  # the windows of the non-wear period are dropped


def test_clock_reset_splits_the_recording(tmp_path):
    f = write_cwa(tmp_path / "P03.cwa", wrist(80 * 40, 100.0), 100.0, START, gap_after=19, gap_s=-30.0)
    store, _ = prepare("device", f, tmp_path / "out", cfg("window.rate=50"), progress=False)
    assert store.recording_names == ["P03#0", "P03#1"]  # the clock stepped back 30 s: two parts, no error
    assert len(store.meta["devices"]["P03.cwa"]["parts"]) == 2


def test_annotations_label_the_windows(tmp_path):
    write_cwa(tmp_path / "P01.cwa", wrist(80 * 30, 100.0), 100.0, START)  # 24 s from 10:00:00.25
    (tmp_path / "ann.csv").write_text(
        "subject,start,end,label\n"
        "P01,2024-05-01T10:00:02.25,2024-05-01T10:00:10.25,walking\n"
        "P01,2024-05-01 10:00:12.25,2024-05-01 10:00:20.25,sitting\n"
        "P99,2024-05-01T10:00:00,2024-05-01T11:00:00,running\n")
    store, _ = prepare("device", tmp_path, tmp_path / "out",
                       cfg("window.rate=50", "window.hop_s=2", "device.annotations_csv=ann.csv"), progress=False)
    assert store.label_names == ["running", "sitting", "walking"]
    got = [store.label_names[k] if k >= 0 else "-" for k in store.labels]
    assert got == ["-", "walking", "walking", "walking", "walking", "-", "sitting", "sitting", "sitting", "sitting",
                   "-"][: len(got)] and len(got) >= 10
    (tmp_path / "ann.csv").write_text("subject,start,end,label\nP01,2024-05-01T10:00:09,2024-05-01T10:00:02,x\n")
    expect_prepare_error("device", tmp_path, tmp_path / "o2", cfg("device.annotations_csv=ann.csv"),
                         "ann.csv, line 2, column 'end'", "end after the start")
