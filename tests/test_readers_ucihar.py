"""The UCI-HAR reader on a miniature 'UCI HAR Dataset' tree written in the dataset's own format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import expect_prepare_error
from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig, prepare

ACTIVITIES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
SIGNALS = ("total_acc", "body_acc", "body_gyro")
OK = ("window.length_s=2.56", "window.hop_s=1.28")


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=list(overrides))


def expect_error(path, out: Path, config: PrepareConfig, *fragments: str) -> str:
    return expect_prepare_error("ucihar", path, out, config, *fragments)


def value(signal: int, axis: int, window: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Known content: a 2 Hz sine scaled by the window's global index, offset by signal and axis."""
    return np.sin(2 * np.pi * 2.0 * t / 50.0)[None, :] * (1 + window[:, None]) + 10 * signal + axis


def make_ucihar(root: Path, subjects=None) -> Path:
    """Train: subjects 1 (3 windows) and 3 (2 windows); test: subject 2 (4 windows)."""
    subjects = subjects or {"train": [1, 1, 1, 3, 3], "test": [2, 2, 2, 2]}
    ds = root / "UCI HAR Dataset"
    ds.mkdir(parents=True)
    (ds / "activity_labels.txt").write_text("".join(f"{i + 1} {a}\n" for i, a in enumerate(ACTIVITIES)))
    t = np.arange(128)
    offset = 0
    for split, subj in subjects.items():
        folder = ds / split / "Inertial Signals"
        folder.mkdir(parents=True)
        n = len(subj)
        windows = np.arange(offset, offset + n)
        offset += n
        (ds / split / f"y_{split}.txt").write_text("".join(f"{(w % 6) + 1}\n" for w in windows))
        (ds / split / f"subject_{split}.txt").write_text("".join(f"{s}\n" for s in subj))
        for si, sig in enumerate(SIGNALS):
            for ai, ax in enumerate("xyz"):
                x = value(si, ai, windows, t)
                lines = ["  " + "  ".join(f"{v:.7e}" for v in row) for row in x]
                (folder / f"{sig}_{ax}_{split}.txt").write_text("\n".join(lines) + "\n")
    return ds


def test_ucihar_default_signals_both_splits(tmp_path):
    ds = make_ucihar(tmp_path)
    store, _ = prepare("ucihar", ds, tmp_path / "out", cfg(*OK), progress=False)
    assert store.channels == ["total_acc_x", "total_acc_y", "total_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z"]
    assert store.rate == 50 and store.window == 128 and len(store) == 9
    assert store.label_names == ACTIVITIES
    assert store.labels.tolist() == [w % 6 for w in range(9)]
    assert store.subject_names == ["S01", "S03", "S02"]
    assert [store.subject_names[s] for s in store.subjects] == ["S01"] * 3 + ["S03"] * 2 + ["S02"] * 4
    assert store.splits.tolist() == [0] * 5 + [2] * 4  # train, test
    np.testing.assert_allclose(store.starts, [0, 1.28, 2.56, 0, 1.28, 0, 1.28, 2.56, 3.84])
    t = np.arange(128)
    w = store.read_batch(range(9))
    np.testing.assert_allclose(w[:, 0], value(0, 0, np.arange(9), t), rtol=1e-6, atol=1e-6)  # total_acc_x
    np.testing.assert_allclose(w[:, 5], value(2, 2, np.arange(9), t), rtol=1e-6, atol=1e-6)  # body_gyro_z
    assert store.meta["dataset"] == "UCI-HAR"


def test_ucihar_signal_and_split_selection_resampled(tmp_path):
    make_ucihar(tmp_path)
    # the parent folder of 'UCI HAR Dataset' is accepted too
    store, _ = prepare("ucihar", tmp_path, tmp_path / "out",
                       cfg("ucihar.signals=[body_acc]", "ucihar.splits=[test]", "window.rate=25", *OK),
                       progress=False)
    assert store.channels == ["body_acc_x", "body_acc_y", "body_acc_z"]
    assert store.window == 64 and len(store) == 4
    assert (store.splits == 2).all() and store.subject_names == ["S02"]
    expected = value(1, 0, np.arange(5, 9), np.arange(0, 128, 2))  # 2 Hz sine decimated to 25 Hz
    np.testing.assert_allclose(store.read_batch(range(4))[:, 0, 8:-8], expected[:, 8:-8], atol=0.05)


def test_ucihar_window_length_hint(tmp_path):
    ds = make_ucihar(tmp_path)
    expect_error(ds, tmp_path / "out", cfg(), "2.56 s", "window.length_s=5.0", "window.length_s=2.56 window.hop_s=1.28")
    # within one sample: accepted
    store, _ = prepare("ucihar", ds, tmp_path / "out", cfg("window.length_s=2.57", "window.hop_s=1.28"), progress=False)
    assert store.window == 128


def test_ucihar_option_errors(tmp_path):
    ds = make_ucihar(tmp_path)
    expect_error(ds, tmp_path / "out", cfg("ucihar.signals=[gyro]", *OK), "ucihar.signals", "total_acc")
    expect_error(ds, tmp_path / "out", cfg("ucihar.splits=[val]", *OK), "ucihar.splits")


@pytest.mark.parametrize(
    "case",
    ["missing", "empty", "count", "subject_count", "short_line", "bad_value", "label", "activities", "subject_text"],
)
def test_ucihar_bad_inputs(tmp_path, case):
    ds = make_ucihar(tmp_path)
    sig = ds / "test" / "Inertial Signals" / "body_gyro_z_test.txt"
    out = tmp_path / "out"
    if case == "missing":
        sig.unlink()
        expect_error(ds, out, cfg(*OK), "body_gyro_z_test.txt", "not found")
    elif case == "empty":
        sig.write_text("")
        expect_error(ds, out, cfg(*OK), "body_gyro_z_test.txt", "empty")
    elif case == "count":
        lines = sig.read_text().splitlines()
        sig.write_text("\n".join(lines[:3]) + "\n")
        expect_error(ds, out, cfg(*OK), "line count mismatch", "body_gyro_z_test.txt has 3 lines", "y_test.txt has 4")
    elif case == "subject_count":
        (ds / "train" / "subject_train.txt").write_text("1\n1\n1\n3\n")
        expect_error(ds, out, cfg(*OK), "line count mismatch", "y_train.txt has 5 lines", "subject_train.txt has 4")
    elif case == "short_line":
        lines = sig.read_text().splitlines()
        lines[2] = lines[2].rsplit(" ", 1)[0]
        sig.write_text("\n".join(lines) + "\n")
        expect_error(ds, out, cfg(*OK), "body_gyro_z_test.txt, line 3", "expected 128 values, found 127")
    elif case == "bad_value":
        lines = sig.read_text().splitlines()
        vals = lines[1].split()
        vals[4] = "abc"
        lines[1] = " ".join(vals)
        sig.write_text("\n".join(lines) + "\n")
        expect_error(ds, out, cfg(*OK), "body_gyro_z_test.txt, line 2, value 5", "'abc'")
    elif case == "label":
        (ds / "train" / "y_train.txt").write_text("1\n2\n7\n1\n1\n")
        expect_error(ds, out, cfg(*OK), "y_train.txt, line 3", "activity id 7", "activity_labels.txt")
    elif case == "activities":
        (ds / "activity_labels.txt").write_text("1 WALKING\nWALKING_UPSTAIRS\n")
        expect_error(ds, out, cfg(*OK), "activity_labels.txt, line 2", "'<id> <ACTIVITY>'")
    elif case == "subject_text":
        (ds / "test" / "subject_test.txt").write_text("2\n2\nx\n2\n")
        expect_error(ds, out, cfg(*OK), "subject_test.txt, line 3", "subject id", "'x'")


def test_ucihar_not_a_folder(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    expect_error(f, tmp_path / "out", cfg(*OK), "file.txt", "UCI HAR Dataset")
    expect_error(tmp_path, tmp_path / "out", cfg(*OK), "activity_labels.txt", "not found")
