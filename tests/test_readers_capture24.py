"""Capture-24 reader: gzip CSV files + annotation dictionary → window store, and bad inputs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from wearspec.config import load_config
from wearspec.data import prepare as prep
from wearspec.data.prepare import PrepareConfig
from wearspec.data.readers import chunks, capture24
from wearspec.errors import WearspecError

SLEEP = "7030 sleeping;MET 0.95"
COOK = (
    "home activity;household chores;preparing meal/cooking/washing dishes;"
    "5035 kitchen activity general, cooking/washing dishes, moderate effort;MET 3.3"
)  # holds commas: quoted in the CSV
WALK = "leisure;walking;17160 walking for pleasure;MET 3.5"
DICTIONARY = f"""annotation,label:WillettsSpecific2018,label:Willetts2018,label:Walmsley2020
{SLEEP},sleep,sleep,sleep
"{COOK}",household-chores,household-chores,light
{WALK},walking,walking,moderate-vigorous
7030 sitting;MET 1.3,sitting,sit-stand,sedentary
"""
FREQ, AMP = 1.0, 0.5


def write_csv(path: Path, seconds: float = 30.0, annotations=("", SLEEP, COOK), start="2016-11-13 02:18:00",
              rate: float = 100.0, gz: bool = True, seed: int = 0) -> np.ndarray:
    """A Capture-24 file: x = AMP·sin(2π·FREQ·t) g; annotations in equal parts (quoted when needed)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.datetime64(start.replace(" ", "T"), "us") + (np.arange(n) * (1e6 / rate)).astype("timedelta64[us]")
    secs = np.arange(n) / rate
    x = AMP * np.sin(2 * np.pi * FREQ * secs)
    yz = rng.normal(size=(n, 2))
    ann = np.repeat(np.asarray(annotations, dtype=object), -(-n // len(annotations)))[:n]
    lines = ["time,x,y,z,annotation"]
    for ti, xi, (yi, zi), a in zip(np.datetime_as_string(t, unit="us"), x, yz, ann):
        a = f'"{a}"' if "," in a else a
        lines.append(f"{ti.replace('T', ' ')},{xi:.6f},{yi:.6f},{zi:.6f},{a}")
    data = ("\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return x


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=["window.rate=50", "window.length_s=5", "window.hop_s=5", *overrides])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "capture24"
    write_csv(root / "P001.csv.gz", seed=1)
    write_csv(root / "P002.csv.gz", seconds=20.0, annotations=(WALK, "7030 sitting;MET 1.3"), seed=2)
    (root / "annotation-label-dictionary.csv").write_text(DICTIONARY)
    (root / "metadata.csv").write_text("pid,age,sex\nP001,30-37,F\n")  # not a data file
    return root


def test_capture24_store(dataset: Path, tmp_path: Path):
    store, _ = prep.prepare("capture24", dataset, tmp_path / "out", cfg(), progress=False)
    assert store.channels == ["x", "y", "z"]
    assert store.rate == 50.0 and store.window == 250
    assert store.label_names == ["light", "moderate-vigorous", "sedentary", "sleep"]
    assert store.subject_names == ["P001", "P002"] and store.recording_names == ["P001", "P002"]
    assert len(store) == 6 + 4
    names = np.array(store.label_names + ["-"])
    assert list(names[store.labels]) == ["-", "-", "sleep", "sleep", "light", "light"] + [
        "moderate-vigorous", "moderate-vigorous", "sedentary", "sedentary"
    ]
    p1 = np.flatnonzero(store.subjects == 0)
    np.testing.assert_allclose(store.starts[p1], 5.0 * np.arange(6))
    x = store.read_batch(p1)[:, 0]
    ref = AMP * np.sin(2 * np.pi * FREQ * (store.starts[p1][:, None] + np.arange(250) / 50.0))
    np.testing.assert_allclose(x[1:-1], ref[1:-1], atol=5e-3)
    assert store.meta["label_scheme"] == "label:Walmsley2020"


def test_capture24_other_scheme_single_file_and_plain_csv(dataset: Path, tmp_path: Path, monkeypatch):
    c = cfg("capture24.annotation_column=label:WillettsSpecific2018")
    store, _ = prep.prepare("capture24", dataset / "P002.csv.gz", tmp_path / "out", c, progress=False)
    assert store.label_names == ["household-chores", "sitting", "sleep", "walking"]
    assert [store.label_names[i] for i in store.labels] == ["walking", "walking", "sitting", "sitting"]
    plain = tmp_path / "plain"
    write_csv(plain / "P009.csv", seconds=10.0, annotations=(COOK,), gz=False)
    (plain / "dict.csv").write_text(DICTIONARY)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 1000)  # lines straddle chunk borders
    (rec,) = list(capture24.open_source(plain, cfg("capture24.dictionary=dict.csv")).items)
    assert rec.subject == "P009" and rec.data.shape == (3, 1000) and set(rec.labels.tolist()) == {0}


def test_capture24_gap_splits_recording(tmp_path: Path):
    root = tmp_path / "c"
    write_csv(root / "P003.csv.gz", seconds=10.0, annotations=(SLEEP,))
    text = gzip.decompress((root / "P003.csv.gz").read_bytes()).decode()
    later = tmp_path / "later.csv.gz"
    write_csv(later, seconds=10.0, annotations=(SLEEP,), start="2016-11-13 02:20:00")
    more = gzip.decompress(later.read_bytes()).decode().split("\n", 1)[1]
    (root / "P003.csv.gz").write_bytes(gzip.compress((text + more).encode()))
    (root / "annotation-label-dictionary.csv").write_text(DICTIONARY)
    recs = list(capture24.open_source(root, cfg()).items)
    assert [r.recording for r in recs] == ["P003", "P003_part2"]
    assert recs[1].start == pytest.approx(120.0)


def test_capture24_clock_change_splits_but_small_step_back_fails(tmp_path: Path):
    root = tmp_path / "c"
    (root / "annotation-label-dictionary.csv").parent.mkdir(parents=True)
    (root / "annotation-label-dictionary.csv").write_text(DICTIONARY)
    a, b = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    write_csv(a, seconds=10.0, annotations=(SLEEP,), start="2016-10-30 01:59:50")
    write_csv(b, seconds=10.0, annotations=(SLEEP,), start="2016-10-30 01:00:00")  # daylight saving ends
    first = gzip.decompress(a.read_bytes()).decode()
    second = gzip.decompress(b.read_bytes()).decode().split("\n", 1)[1]
    (root / "P004.csv.gz").write_bytes(gzip.compress((first + second).encode()))
    recs = list(capture24.open_source(root, cfg()).items)
    assert [r.recording for r in recs] == ["P004", "P004_part2"]
    assert [r.data.shape[1] for r in recs] == [1000, 1000]

    def step_back(lines):
        lines[500] = lines[498].split(",", 1)[0] + "," + lines[500].split(",", 1)[1]
    rewrite(root / "P004.csv.gz", step_back)
    assert_fails(root, tmp_path / "out", "P004.csv.gz, line 501", "timestamps must increase")


# ---- bad input -----------------------------------------------------------------------------------


def assert_fails(path: Path, out: Path, *needles: str, c: PrepareConfig | None = None) -> str:
    with pytest.raises(WearspecError) as e:
        prep.prepare("capture24", path, out, c or cfg(), progress=False)
    msg = str(e.value)
    for n in needles:
        assert n in msg, msg
    assert not out.exists()
    return msg


def rewrite(path: Path, fn) -> None:
    lines = gzip.decompress(path.read_bytes()).decode().split("\n")
    fn(lines)
    path.write_bytes(gzip.compress("\n".join(lines).encode()))


def test_capture24_missing_inputs(tmp_path: Path, dataset: Path):
    assert_fails(tmp_path / "nothing", tmp_path / "out", "nothing", "not found")
    (dataset / "annotation-label-dictionary.csv").unlink()
    assert_fails(dataset, tmp_path / "out", "annotation-label-dictionary.csv", "not found")
    (tmp_path / "empty").mkdir()
    assert_fails(tmp_path / "empty", tmp_path / "out", "no Pnnn.csv.gz files")


def test_capture24_unknown_scheme(dataset: Path, tmp_path: Path):
    msg = assert_fails(dataset, tmp_path / "out", "annotation-label-dictionary.csv", "label:Nope",
                       c=cfg("capture24.annotation_column=label:Nope"))
    assert "label:Walmsley2020" in msg and "label:WillettsSpecific2018" in msg


def test_capture24_annotation_not_in_dictionary(dataset: Path, tmp_path: Path):
    def change(lines):
        lines[1500] = lines[1500].rsplit(",", 1)[0] + ",9999 dancing;MET 7.8"
    rewrite(dataset / "P001.csv.gz", change)
    assert_fails(dataset, tmp_path / "out", "P001.csv.gz, line 1501", "unknown annotation '9999 dancing;MET 7.8'",
                 "annotation-label-dictionary.csv")


def test_capture24_truncated_gzip(dataset: Path, tmp_path: Path):
    f = dataset / "P002.csv.gz"
    f.write_bytes(f.read_bytes()[:-300])
    msg = assert_fails(dataset, tmp_path / "out", "P002.csv.gz, after line", "compressed data ends early", "truncated")
    assert int(msg.split("after line ")[1].split(":")[0]) > 100


def test_capture24_not_gzip_and_empty(dataset: Path, tmp_path: Path):
    f = dataset / "P002.csv.gz"
    f.write_bytes(b"time,x,y,z,annotation\n")
    assert_fails(dataset, tmp_path / "out", "P002.csv.gz", "not a gzip file")
    f.write_bytes(gzip.compress(b""))
    assert_fails(dataset, tmp_path / "out", "P002.csv.gz", "empty file")
    f.write_bytes(gzip.compress(b"time,x,y,z,annotation\n"))
    assert_fails(dataset, tmp_path / "out", "P002.csv.gz", "no data rows")


def test_capture24_truncated_last_line(dataset: Path, tmp_path: Path):
    def cut(lines):
        lines[-2] = lines[-2][:30]  # lines[-1] is '' after the final newline
    rewrite(dataset / "P002.csv.gz", cut)
    assert_fails(dataset, tmp_path / "out", "P002.csv.gz, line 2001", "expected 5 comma-separated fields, got 2",
                 "truncated")


def test_capture24_bad_header(dataset: Path, tmp_path: Path):
    def change(lines):
        lines[0] = "time,x,y,annotation"
    rewrite(dataset / "P001.csv.gz", change)
    assert_fails(dataset, tmp_path / "out", "P001.csv.gz, line 1", "expected the header time,x,y,z,annotation")


def test_capture24_non_numeric(dataset: Path, tmp_path: Path):
    def change(lines):
        f = lines[77].split(",", 4)
        lines[77] = ",".join([f[0], f[1], "0.1g", f[3], f[4]])
    rewrite(dataset / "P001.csv.gz", change)
    assert_fails(dataset, tmp_path / "out", "P001.csv.gz, line 78, column 3 (y)", "expected a number, got '0.1g'")


def test_capture24_bad_time(dataset: Path, tmp_path: Path):
    def change(lines):
        lines[10] = "13/11/2016 02:18:00" + lines[10][lines[10].index(","):]
    rewrite(dataset / "P001.csv.gz", change)
    assert_fails(dataset, tmp_path / "out", "P001.csv.gz, line 11, column 1 (time)", "expected a date-time",
                 "'13/11/2016 02:18:00'")


def test_capture24_inconsistent_rate(tmp_path: Path):
    root = tmp_path / "c"
    write_csv(root / "P001.csv.gz", seconds=20.0, rate=30.0)
    (root / "annotation-label-dictionary.csv").write_text(DICTIONARY)
    assert_fails(root, tmp_path / "out", "P001.csv.gz", "inconsistent sampling rate", "30 Hz")


def test_capture24_short_recording(tmp_path: Path):
    root = tmp_path / "c"
    write_csv(root / "P001.csv.gz", seconds=4.0)
    (root / "annotation-label-dictionary.csv").write_text(DICTIONARY)
    assert_fails(root, tmp_path / "out", "P001.csv.gz", "shorter than one window")
