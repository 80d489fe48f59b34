"""The generic reader: numpy windows (X/Y/P.npy) and CSV / CSV.gz / Parquet long recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import expect_prepare_error, write_text_file
from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig, prepare

RATE = 50.0


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=list(overrides))


def expect_error(path, out: Path, config: PrepareConfig, *fragments: str) -> str:
    return expect_prepare_error("generic", path, out, config, *fragments)


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> Path:
    text = ",".join(header) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    return write_text_file(path, text, gz)


def sine(n: int, rate: float, freq: float, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(n) / rate + phase)


def recording_rows(n: int, labels: list[str], t0: float = 0.0, rate: float = RATE) -> list[list]:
    """time, ax, ay, az, label rows; ax is a 1 Hz sine, ay = 2, az = sample index / 100."""
    ax = sine(n, rate, 1.0)
    per = n // len(labels)
    return [
        [f"{t0 + i / rate:.4f}", f"{ax[i]:.6f}", "2", f"{i / 100:.4f}", labels[min(i // per, len(labels) - 1)]]
        for i in range(n)
    ]


HEADER = ["time", "ax", "ay", "az", "label"]


# ---------------------------------------------------------------------------------------------
# numpy windows
# ---------------------------------------------------------------------------------------------


def make_npy(folder: Path, n: int = 6, c: int = 3, t: int = 100, labels=True, pid_name="P.npy") -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    x = np.stack([np.stack([sine(t, RATE, 1.0 + k, ch) for ch in range(c)]) for k in range(n)]).astype(np.float32)
    np.save(folder / "X.npy", x)
    if labels:
        np.save(folder / "Y.npy", np.array(["walk", "run", "walk", "sit", "run", "walk"][:n]))
    if pid_name:
        np.save(folder / pid_name, np.array(["p2", "p2", "p1", "p1", "p2", "p3"][:n]))
    return x


def test_numpy_windows_roundtrip(tmp_path):
    x = make_npy(tmp_path / "npy")
    store, reused = prepare(
        "generic", tmp_path / "npy", tmp_path / "out",
        cfg("generic.rate=50", "window.rate=50", "window.length_s=2", "window.hop_s=2"), progress=False,
    )
    assert not reused
    assert store.channels == ["ch0", "ch1", "ch2"]
    assert store.rate == 50 and store.window == 100 and len(store) == 6
    assert store.label_names == ["run", "sit", "walk"]
    assert store.subject_names == ["p2", "p1", "p3"]  # order of first appearance
    # one batch per subject: p2 = windows 0, 1, 4
    order = [0, 1, 4, 2, 3, 5]
    np.testing.assert_allclose(store.read_batch(range(6)), x[order], atol=1e-6)
    names = [store.label_names[k] for k in store.labels]
    assert names == ["walk", "run", "run", "walk", "sit", "walk"]
    np.testing.assert_allclose(store.starts, [0, 2, 4, 0, 2, 0])
    assert (store.splits == -1).all()
    # same inputs and settings: the finished store is found and reused
    _, reused = prepare(
        "generic", tmp_path / "npy", tmp_path / "out",
        cfg("generic.rate=50", "window.rate=50", "window.length_s=2", "window.hop_s=2"), progress=False,
    )
    assert reused


def test_numpy_resampled_transposed_and_configured_labels(tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    x = np.stack([np.stack([sine(100, RATE, 1.0), np.full(100, 3.0)]) for _ in range(4)]).astype(np.float32)
    np.save(folder / "X.npy", x.transpose(0, 2, 1))  # (n, T, C): transposed because channels say C=2
    np.save(folder / "Y.npy", np.array([2, 1, 2, 2]))
    np.save(folder / "pid.npy", np.array([7, 7, 8, 8]))
    store, _ = prepare(
        "generic", folder / "X.npy", tmp_path / "out",
        cfg("generic.rate=50", "generic.channels=[acc,temp]", "generic.labels=['1','2','3']",
            "window.rate=25", "window.length_s=2", "window.hop_s=2"),
        progress=False,
    )
    assert store.channels == ["acc", "temp"] and store.window == 50 and len(store) == 4
    assert store.label_names == ["1", "2", "3"]
    assert store.labels.tolist() == [1, 0, 1, 1]
    assert store.subject_names == ["7", "8"]
    w = store.read(0)
    np.testing.assert_allclose(w[0, 5:-5], sine(50, 25.0, 1.0)[5:-5], atol=0.05)  # 1 Hz sine survives
    np.testing.assert_allclose(w[1, 5:-5], 3.0, atol=0.05)


def test_numpy_unlabelled_single_subject(tmp_path):
    make_npy(tmp_path / "npy", labels=False, pid_name=None)
    store, _ = prepare("generic", tmp_path / "npy", tmp_path / "out",
                       cfg("generic.rate=50", "window.length_s=2"), progress=False)
    assert store.subject_names == ["S0"] and store.label_names == [] and (store.labels == -1).all()


def test_numpy_errors(tmp_path):
    folder = tmp_path / "npy"
    make_npy(folder)
    out = tmp_path / "out"
    expect_error(folder, out, cfg("window.length_s=2"), "X.npy", "generic.rate")
    expect_error(folder, out, cfg("generic.rate=50", "window.length_s=2", "generic.labels=[walk,run]"),
                 "Y.npy, index 3", "unknown label 'sit'", "generic.labels")
    expect_error(folder, out, cfg("generic.rate=50", "window.length_s=2", "generic.channels=[a,b]"),
                 "X.npy", "3 channels", "generic.channels")
    # default window (5 s) is longer than the 2 s windows: short_policy surfaces through prepare
    expect_error(folder, out, cfg("generic.rate=50"), "X.npy", "shorter than window.length_s=5")
    store, _ = prepare("generic", folder, out, cfg("generic.rate=50", "window.short_policy=pad"), progress=False)
    assert store.window == 250 and (store.read(0)[:, 100:] == 0).all()
    np.save(folder / "Y.npy", np.array(["a", "b"]))
    expect_error(folder, tmp_path / "out2", cfg("generic.rate=50", "window.length_s=2"),
                 "Y.npy", "expected 6 labels", "(2,)")
    np.save(folder / "Y.npy", np.array(["a", None, "b", "a", "a", "a"], dtype=object))
    expect_error(folder, tmp_path / "out2", cfg("generic.rate=50", "window.length_s=2"), "Y.npy", "dtype=object")
    raw = (folder / "X.npy").read_bytes()
    (folder / "X.npy").write_bytes(raw[: len(raw) // 2])
    expect_error(folder, tmp_path / "out2", cfg("generic.rate=50", "window.length_s=2"), "X.npy", "truncated")
    (folder / "X.npy").write_bytes(b"")
    expect_error(folder, tmp_path / "out2", cfg("generic.rate=50", "window.length_s=2"), "X.npy", "empty")


# ---------------------------------------------------------------------------------------------
# CSV / Parquet tables
# ---------------------------------------------------------------------------------------------


def test_csv_folder_one_file_per_subject(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    write_csv(folder / "alice.csv", HEADER + ["note"], [r + ["x"] for r in recording_rows(600, ["walk", "sit"])])
    write_csv(folder / "bob.csv.gz", HEADER + ["note"], [r + ["y"] for r in recording_rows(300, ["run"])], gz=True)
    store, _ = prepare("generic", folder, tmp_path / "out",
                       cfg("generic.rate=50", "window.length_s=2", "window.hop_s=1"), progress=False)
    assert store.channels == ["ax", "ay", "az"]  # the text column 'note' is no channel
    assert store.label_names == ["run", "sit", "walk"]
    assert store.subject_names == ["alice", "bob"]
    n_alice, n_bob = 1 + (600 - 100) // 50, 1 + (300 - 100) // 50
    assert len(store) == n_alice + n_bob
    w = store.read(2)  # alice, window starting at 2 s
    np.testing.assert_allclose(w[0], sine(600, RATE, 1.0)[100:200], atol=1e-5)
    np.testing.assert_allclose(w[1], 2.0)
    np.testing.assert_allclose(w[2], np.arange(100, 200) / 100, atol=1e-4)
    np.testing.assert_allclose(store.starts[:3], [0, 1, 2])
    labels = [store.label_names[k] for k in store.labels]
    assert labels[:n_alice] == ["walk"] * 5 + ["sit"] * 6  # majority of each 2 s window
    assert labels[n_alice:] == ["run"] * n_bob


def test_csv_gz_subject_recording_columns_datetime_and_gaps(tmp_path):
    rows = []
    base = np.datetime64("2024-05-01T10:00:00.000", "ms")
    for subject, rec, offset in (("s1", "r1", 0), ("s2", "r1", 0), ("s1", "r2", 3600)):
        t = [base + np.timedelta64(int(offset * 1000 + i * 20), "ms") for i in range(400)]
        t = t[:200] + [x + np.timedelta64(5000, "ms") for x in t[200:]]  # a 5 s gap half-way
        ax = sine(400, RATE, 2.0)
        rows += [[str(t[i]), subject, rec, f"{ax[i]:.6f}", "1" if i % 2 else "-2", ""] for i in range(400)]
    rows.insert(5, rows.pop(400))  # an s2 row among s1's rows: rows are grouped by (subject, recording)
    path = write_csv(tmp_path / "all.csv.gz", ["ts", "who", "session", "x", "y", "label"], rows, gz=True)
    store, _ = prepare(
        "generic", path, tmp_path / "out",
        cfg("generic.time_column=ts", "generic.time_unit=datetime", "generic.subject_column=who",
            "generic.recording_column=session", "window.length_s=2", "window.hop_s=2"),
        progress=False,
    )
    assert store.channels == ["x", "y"]
    assert store.subject_names == ["s1", "s2"]
    assert store.recording_names == ["s1/r1#0", "s1/r1#1", "s2/r1#0", "s2/r1#1", "s1/r2#0", "s1/r2#1"]
    assert len(store) == 6 * 2
    assert store.label_names == [] and (store.labels == -1).all()
    # second segment of s1/r1 starts after 4 s of data + a 5 s gap
    seg = store.recordings == store.recording_names.index("s1/r1#1")
    np.testing.assert_allclose(store.starts[seg], [9.0, 11.0], atol=1e-9)


def test_parquet_timestamps_nulls_and_resampling(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 1000  # 10 s at 100 Hz
    ax = sine(n, 100.0, 1.0)
    ax_col = [None if i == 333 else float(v) for i, v in enumerate(ax)]
    t = np.datetime64("2024-01-01T00:00:00", "ns") + (np.arange(n) * 10_000_000).astype("timedelta64[ns]")
    table = pa.table({
        "time": pa.array(t, type=pa.timestamp("ns")),
        "acc": pa.array(ax_col, type=pa.float64()),
        "subject": pa.array(["A"] * n),
        "label": pa.array([1] * 500 + [None] * 500, type=pa.int64()),
    })
    pq.write_table(table, tmp_path / "rec.parquet")
    store, _ = prepare("generic", tmp_path / "rec.parquet", tmp_path / "out",
                       cfg("window.rate=25", "window.length_s=2", "window.hop_s=2"), progress=False)
    assert store.channels == ["acc"] and store.rate == 25 and store.window == 50
    assert len(store) == 5  # 10 s at 100 Hz → 250 samples at 25 Hz → 5 windows
    x = store.read_batch(range(5)).reshape(-1)
    np.testing.assert_allclose(x[5:-5], sine(250, 25.0, 1.0)[5:-5], atol=0.02)  # the null was interpolated
    assert store.label_names == ["1"]
    # window 2 covers rows 400..599, half of them labelled: majority 1/2 ≥ min_label_fraction=0.5
    assert store.labels.tolist() == [0, 0, 0, -1, -1]
    store2, _ = prepare("generic", tmp_path / "rec.parquet", tmp_path / "out2",
                        cfg("window.rate=25", "window.length_s=2", "window.hop_s=2", "window.label_policy=pure"),
                        progress=False)
    assert store2.labels.tolist() == [0, 0, -1, -1, -1]


def test_csv_without_time_column_uses_rate(tmp_path):
    path = write_csv(tmp_path / "s1.csv", ["a", "b"], [[i, -i] for i in range(300)])
    store, _ = prepare("generic", path, tmp_path / "out",
                       cfg("generic.rate=100", "window.rate=100", "window.length_s=1", "window.hop_s=1"),
                       progress=False)
    assert len(store) == 3 and store.channels == ["a", "b"]
    np.testing.assert_allclose(store.read(1)[1], -np.arange(100, 200))


def test_csv_empty_cells_are_missing(tmp_path):
    rows = recording_rows(300, ["walk"])
    rows[10][1] = ""
    rows[20][2] = "NA"
    path = write_csv(tmp_path / "s1.csv", HEADER, rows)
    store, _ = prepare("generic", path, tmp_path / "out", cfg("window.length_s=2", "window.hop_s=2"), progress=False)
    assert len(store) == 3 and np.isfinite(store.read(0)).all()
    msg = expect_error(path, tmp_path / "out2", cfg("window.length_s=2", "window.nan_policy=error"),
                       "s1.csv", "lines 2-301", "sample 10", "nan_policy")
    assert "NaN" in msg


def test_table_errors(tmp_path):
    out = tmp_path / "out"
    ok = cfg("window.length_s=2", "window.hop_s=2")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    expect_error(empty_dir, out, ok, "empty", "no X.npy and no .csv")
    expect_error(tmp_path / "missing.csv", out, ok, "missing.csv", "not found")

    bad = tmp_path / "bad"
    bad.mkdir()
    f = bad / "s1.csv"
    f.write_text("")
    expect_error(f, out, ok, "s1.csv", "empty")
    f.write_text("time,ax,ay,az,label\n")
    expect_error(f, out, ok, "s1.csv", "no data rows")

    rows = recording_rows(300, ["walk"])
    write_csv(f, HEADER, rows)
    f.write_text(f.read_text() + "6.0000,0.1,")  # truncated last line
    expect_error(f, out, ok, "s1.csv, line 302", "expected 5 fields", "found 3", "truncated")

    write_csv(f, HEADER, rows)
    expect_error(f, out, cfg("window.length_s=2", "generic.channels=[ax,gx,gy]"),
                 "s1.csv", "missing channel column(s) 'gx', 'gy'", "found columns: 'time', 'ax'")
    expect_error(f, out, cfg("window.length_s=2", "generic.time_column=t"),
                 "s1.csv", "missing column(s) 't'", "found columns: 'time', 'ax', 'ay', 'az', 'label'")

    rows_bad = [list(r) for r in rows]
    rows_bad[5][2] = "abc"
    write_csv(f, HEADER, rows_bad)
    expect_error(f, out, ok, "s1.csv, line 7, column 'ay'", "expected a number", "'abc'")

    expect_error(write_csv(f, HEADER, rows), out, cfg("window.length_s=2", "generic.labels=[sit,run]"),
                 "s1.csv, line 2, column 'label'", "unknown label 'walk'", "'sit', 'run'")

    rows_back = [list(r) for r in rows]
    rows_back[50][0] = "0.5"
    write_csv(f, HEADER, rows_back)
    expect_error(f, out, ok, "s1.csv, line 52, column 'time'", "timestamps must increase")

    expect_error(write_csv(f, HEADER, rows), out, cfg("window.length_s=2", "generic.rate=100"),
                 "s1.csv, lines 2-301", "inconsistent sampling rate", "100 Hz")
    jitter = [list(r) for r in rows]
    for i in range(0, 300, 3):
        jitter[i][0] = f"{i / RATE + 0.015:.4f}"
    expect_error(write_csv(f, HEADER, jitter), out, ok, "s1.csv", "inconsistent sampling rate")

    # recording shorter than one window: short_policy=error surfaces through prepare, pad fixes it
    write_csv(f, HEADER, rows[:60])
    expect_error(f, out, ok, "s1.csv, lines 2-61", "shorter than one window", "short_policy")
    store, _ = prepare("generic", f, out, cfg("window.length_s=2", "window.short_policy=pad"), progress=False)
    assert len(store) == 1 and (store.read(0)[:, 60:] == 0).all()
    expect_error(f, tmp_path / "out3", cfg("window.length_s=2", "window.short_policy=skip"), "no windows")

    # channel count mismatch between files of one folder
    write_csv(bad / "s1.csv", HEADER, rows)
    write_csv(bad / "s2.csv", ["time", "ax", "ay", "label"], [r[:3] + [r[4]] for r in rows])
    expect_error(bad, tmp_path / "out4", ok, "s2.csv", "['ax', 'ay'] (2)", "['ax', 'ay', 'az'] (3)", "s1.csv")


def test_parquet_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out"
    n = 200
    t = np.arange(n) / RATE
    f = tmp_path / "r.parquet"
    vals = [f"{v:.3f}" for v in sine(n, RATE, 1.0)]
    vals[3] = "oops"
    pq.write_table(pa.table({"time": t, "ax": pa.array(vals)}), f)
    expect_error(f, out, cfg("window.length_s=2", "generic.channels=[ax]"), "r.parquet, row 4, column 'ax'", "'oops'")
    pq.write_table(pa.table({"time": t, "ax": sine(n, RATE, 1.0)}), f)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    expect_error(f, out, cfg("window.length_s=2"), "r.parquet", "unreadable or truncated Parquet")


def test_tab_delimited_millisecond_times(tmp_path):
    rows = recording_rows(250, ["a"])
    text = "\t".join(["t_ms", "ax", "ay", "az", "label"]) + "\n"
    text += "".join("\t".join([f"{1_700_000_000_000 + i * 20}"] + r[1:]) + "\n" for i, r in enumerate(rows))
    (tmp_path / "p1.csv").write_text(text)
    store, _ = prepare("generic", tmp_path / "p1.csv", tmp_path / "out",
                       cfg("generic.time_column=t_ms", "generic.time_unit=ms", "generic.rate=50",
                           "window.length_s=2", "window.hop_s=2"), progress=False)
    assert len(store) == 2 and store.channels == ["ax", "ay", "az"] and store.label_names == ["a"]
    np.testing.assert_allclose(store.starts, [0.0, 2.0])


def test_more_table_errors(tmp_path):
    out = tmp_path / "out"
    ok = cfg("window.length_s=2")
    rows = recording_rows(300, ["walk"])
    gz = write_csv(tmp_path / "s1.csv.gz", HEADER, rows, gz=True)
    raw = gz.read_bytes()
    gz.write_bytes(raw[: len(raw) - 40])
    expect_error(gz, out, ok, "s1.csv.gz", "truncated or corrupt gzip")
    gz.unlink()

    dated = [[f"2024-01-01T00:00:{i / RATE:06.3f}"] + r[1:] for i, r in enumerate(rows[:100])]
    f = write_csv(tmp_path / "s2.csv", HEADER, dated)
    expect_error(f, out, ok, "s2.csv, line 2, column 'time'", "generic.time_unit=datetime")
    dated[7][0] = "yesterday"
    write_csv(f, HEADER, dated)
    expect_error(f, out, cfg("window.length_s=2", "generic.time_unit=datetime"),
                 "s2.csv, line 9, column 'time'", "ISO date-time", "'yesterday'")
    expect_error(f, out, cfg("generic.time_unit=hours"), "generic.time_unit", "'hours'")

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"time": pa.array([], pa.float64()), "ax": pa.array([], pa.float64())}),
                   tmp_path / "e.parquet")
    expect_error(tmp_path / "e.parquet", out, ok, "e.parquet", "no data rows")
    pq.write_table(pa.table({"time": [0.0, 0.02, 0.04], "ax": [1.0, 2.0, 3.0], "label": ["x", "", "y"]}),
                   tmp_path / "l.parquet")
    expect_error(tmp_path / "l.parquet", out, cfg("window.length_s=2", "generic.labels=[x]"),
                 "l.parquet, row 3, column 'label'", "unknown label 'y'")
