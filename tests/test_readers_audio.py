"""The audio reader: ESC-50 style (CSV + folds) and Speech Commands style (label folders + lists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile", reason="the audio reader needs soundfile (a wearspec dependency)")

from conftest import expect_prepare_error  # noqa: E402
from wearspec.config import load_config  # noqa: E402
from wearspec.data.prepare import PrepareConfig, prepare  # noqa: E402


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=list(overrides))


def expect_error(path, out: Path, config: PrepareConfig, *fragments: str) -> str:
    return expect_prepare_error("audio", path, out, config, *fragments)


def tone(seconds: float, rate: int, freq: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * rate))) / rate)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# ESC-50 style
# ---------------------------------------------------------------------------------------------

ESC_HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def make_esc(root: Path) -> Path:
    """4 clips of 0.5 s: two folds, two categories, two native rates, one stereo file."""
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    sf.write(root / "audio" / "1-100-A-0.wav", tone(0.5, 8000, 200.0), 8000)
    sf.write(root / "audio" / "1-101-A-1.wav", tone(0.5, 22050, 200.0), 22050)
    stereo = np.stack([np.full(11025, 0.5), np.full(11025, 0.1)], axis=1).astype(np.float32)
    sf.write(root / "audio" / "2-102-A-0.wav", stereo, 22050)
    sf.write(root / "audio" / "2-103-A-1.flac", tone(0.5, 16000, 300.0), 16000)
    rows = [
        "1-100-A-0.wav,1,0,dog,True,100,A",
        "1-101-A-1.wav,1,1,rooster,False,101,A",
        "2-102-A-0.wav,2,0,dog,True,102,A",
        "2-103-A-1.flac,2,1,rooster,False,103,A",
    ]
    (root / "meta" / "esc50.csv").write_text(ESC_HEADER + "\n".join(rows) + "\n")
    return root


ESC = ("audio.labels_csv=meta/esc50.csv", "window.rate=16000", "window.length_s=0.5", "window.hop_s=0.5")


def test_esc50_style(tmp_path):
    root = make_esc(tmp_path / "esc")
    store, _ = prepare("audio", root, tmp_path / "out", cfg(*ESC), progress=False)
    assert store.channels == ["audio"] and store.rate == 16000 and store.window == 8000
    assert len(store) == 4
    assert store.label_names == ["dog", "rooster"]
    assert store.labels.tolist() == [0, 1, 0, 1]
    assert store.subject_names == ["fold1", "fold2"]
    assert [store.subject_names[s] for s in store.subjects] == ["fold1", "fold1", "fold2", "fold2"]
    assert store.recording_names == ["1-100-A-0", "1-101-A-1", "2-102-A-0", "2-103-A-1"]
    w = store.read_batch(range(4))[:, 0]
    expected = tone(0.5, 16000, 200.0)
    np.testing.assert_allclose(w[0, 200:-200], expected[200:-200], atol=0.02)  # 8 kHz → 16 kHz
    np.testing.assert_allclose(w[1, 200:-200], expected[200:-200], atol=0.02)  # 22.05 kHz → 16 kHz
    np.testing.assert_allclose(w[2, 200:-200], 0.3, atol=0.01)  # stereo (0.5, 0.1) mixed down
    np.testing.assert_allclose(w[3], tone(0.5, 16000, 300.0), atol=1e-4)  # native 16 kHz, untouched


def test_esc50_longer_clips_are_cropped_and_short_ones_padded(tmp_path):
    root = make_esc(tmp_path / "esc")
    store, _ = prepare("audio", root, tmp_path / "out",
                       cfg("audio.labels_csv=meta/esc50.csv", "window.rate=8000", "window.length_s=0.25",
                           "window.hop_s=0.25"), progress=False)
    assert store.window == 2000 and len(store) == 4
    np.testing.assert_allclose(store.read(0)[0], tone(0.25, 8000, 200.0), atol=1e-4)  # PCM_16
    expect_error(root, tmp_path / "out2", cfg("audio.labels_csv=meta/esc50.csv", "window.rate=8000", "window.length_s=1"),
                 "1-100-A-0.wav", "shorter than window.length_s=1", "short_policy")
    store, _ = prepare("audio", root, tmp_path / "out3",
                       cfg("audio.labels_csv=meta/esc50.csv", "window.rate=8000", "window.length_s=1",
                           "window.short_policy=pad"), progress=False)
    assert store.window == 8000 and (store.read(0)[0, 4000:] == 0).all()


def test_esc50_errors(tmp_path):
    root = make_esc(tmp_path / "esc")
    csv_path = root / "meta" / "esc50.csv"
    out = tmp_path / "out"
    text = csv_path.read_text()
    expect_error(root, out, cfg("audio.labels_csv=meta/missing.csv", *ESC[1:]), "missing.csv", "not found")
    csv_path.write_text(text.replace("category", "class"))
    expect_error(root, out, cfg(*ESC), "esc50.csv", "missing column(s) 'category'",
                 "found columns: 'filename', 'fold', 'target', 'class'")
    csv_path.write_text(text.replace("1-101-A-1.wav", "9-999-A-1.wav"))
    expect_error(root, out, cfg(*ESC), "esc50.csv, line 3, column 'filename'", "9-999-A-1.wav not found")
    csv_path.write_text(text)
    (root / "audio" / "1-101-A-1.wav").write_bytes(b"RIFF\x00\x00not really a wave file at all")
    expect_error(root, out, cfg(*ESC), "1-101-A-1.wav", "unreadable or corrupt audio")
    (root / "audio" / "1-101-A-1.wav").write_bytes(b"")
    expect_error(root, out, cfg(*ESC), "1-101-A-1.wav", "empty")


def test_esc50_without_folds(tmp_path):
    root = make_esc(tmp_path / "esc")
    store, _ = prepare("audio", root, tmp_path / "out", cfg("audio.fold_column=", *ESC), progress=False)
    assert store.subject_names == ["S0"] and len(store) == 4


# ---------------------------------------------------------------------------------------------
# Speech Commands style
# ---------------------------------------------------------------------------------------------


def make_speech(root: Path, lists: bool = True) -> Path:
    for label, files in {
        "yes": [("aa11_nohash_0", 1.0), ("aa11_nohash_1", 0.5), ("bb22_nohash_0", 1.0)],
        "no": [("bb22_nohash_0", 0.75), ("cc33_nohash_0", 1.0)],
        "_background_noise_": [("white_noise", 3.0)],
    }.items():
        (root / label).mkdir(parents=True)
        for name, seconds in files:
            sf.write(root / label / f"{name}.wav", tone(seconds, 16000, 440.0), 16000, subtype="PCM_16")
    (root / "README.md").write_text("not a clip")
    if lists:
        (root / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\n")
        (root / "testing_list.txt").write_text("no/cc33_nohash_0.wav\nno/gone_nohash_0.wav\n")
    return root


SPEECH = ("window.short_policy=pad", "window.length_s=1", "window.hop_s=1", "window.rate=16000")


def test_speech_commands_style(tmp_path):
    root = make_speech(tmp_path / "sc")
    store, _ = prepare("audio", root, tmp_path / "out", cfg(*SPEECH), progress=False)
    assert store.channels == ["audio"] and store.window == 16000 and len(store) == 5  # background noise skipped
    assert store.label_names == ["no", "yes"]
    assert store.recording_names == ["no/bb22_nohash_0", "no/cc33_nohash_0", "yes/aa11_nohash_0",
                                     "yes/aa11_nohash_1", "yes/bb22_nohash_0"]
    assert store.labels.tolist() == [0, 0, 1, 1, 1]
    assert [store.subject_names[s] for s in store.subjects] == ["bb22", "cc33", "aa11", "aa11", "bb22"]
    assert store.splits.tolist() == [0, 2, 0, 0, 1]  # train, test, train, train, val
    assert store.meta["split_list_entries_ignored"] == 1
    w = store.read_batch(range(5))[:, 0]
    np.testing.assert_allclose(w[3, :8000], tone(0.5, 16000, 440.0), atol=1e-4)  # PCM_16 rounding
    assert (w[3, 8000:] == 0).all()  # 0.5 s clip zero-padded to 1 s
    assert (w[0, 12000:] == 0).all()


def test_speech_commands_resampled_without_lists(tmp_path):
    root = make_speech(tmp_path / "sc", lists=False)
    store, _ = prepare("audio", root, tmp_path / "out",
                       cfg("window.short_policy=pad", "window.length_s=1", "window.rate=8000"), progress=False)
    assert store.window == 8000 and len(store) == 5
    assert (store.splits == -1).all()  # no predefined split
    np.testing.assert_allclose(store.read(2)[0, 100:-100], tone(1.0, 8000, 440.0)[100:-100], atol=0.02)


def test_speech_commands_errors(tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    (empty / "_background_noise_").mkdir(parents=True)
    sf.write(empty / "_background_noise_" / "n.wav", tone(1.0, 16000, 100.0), 16000)
    expect_error(empty, out, cfg(*SPEECH), "empty", "no audio clips found")
    root = make_speech(tmp_path / "sc")
    # clips shorter than the window with the default short_policy=error
    expect_error(root, out, cfg("window.length_s=1", "window.rate=16000"), "bb22_nohash_0.wav", "short_policy=pad")
    (root / "yes" / "aa11_nohash_1.wav").write_bytes(b"\x00" * 100)
    expect_error(root, out, cfg(*SPEECH), "aa11_nohash_1.wav", "unreadable or corrupt audio")
    f = tmp_path / "clip.wav"
    f.write_bytes(b"x")
    expect_error(f, out, cfg(*SPEECH), "clip.wav", "expected a folder")
