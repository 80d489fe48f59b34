"""Large CSV/Parquet files read in parts (readers.table_stream) give the store of a whole read."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import expect_prepare_error, write_text_file
from wearspec.data.prepare import PrepareConfig, prepare
from wearspec.config import load_config
from wearspec.data.readers import chunks, table_stream


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=["window.length_s=2", "window.hop_s=0.7", *overrides])


def _rows(rng, subject, rec, n, t0, gap_at=None, rate=50.0):
    t = t0 + np.arange(n) / rate
    if gap_at is not None:
        t[gap_at:] += 7.5
    x = np.cumsum(rng.normal(size=(3, n)), axis=1)
    labels = np.array(["walk", "sit", ""])[(np.arange(n) // 90) % 3]
    out = []
    for i in range(n):
        ax = "NA" if i % 211 == 5 else f"{x[0, i]:.5f}"
        out.append(f"{t[i]:.4f},{subject},{rec},{ax},{x[1, i]:.5f},{x[2, i]:.5f},{labels[i]}\n")
    return out


def _csv(path, gz=False):
    rng = np.random.default_rng(0)
    rows = _rows(rng, "s1", "r1", 1500, 100.0, gap_at=700) + _rows(rng, "s1", "r2", 900, 5000.0)
    rows += _rows(rng, "s2", "r1", 1200, 0.0)
    text = "time,subject,recording,ax,ay,az,label\n" + "".join(rows)
    return write_text_file(path, text, gz)


def _same(a, b, atol=0.0):
    assert a.subject_names == b.subject_names and a.recording_names == b.recording_names
    assert a.label_names == b.label_names and len(a) == len(b) > 20
    np.testing.assert_array_equal(a.subjects, b.subjects)
    np.testing.assert_array_equal(a.recordings, b.recordings)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.starts, b.starts, atol=1e-9)
    np.testing.assert_allclose(a.read_batch(range(len(a))), b.read_batch(range(len(b))), atol=atol, rtol=0)


def _parser(monkeypatch, parser: str) -> list:
    """Use the numpy or the pyarrow CSV parser for large files; count the parts it makes."""
    seen: list = []
    if parser == "numpy":
        monkeypatch.setattr(table_stream, "_arrow_csv", lambda: None)
        name = "csv_parts"
    else:
        pytest.importorskip("pyarrow")
        name = "arrow_csv_parts"
    real = getattr(table_stream, name)
    monkeypatch.setattr(table_stream, name, lambda *a, **k: (seen.append(1) or x for x in real(*a, **k)))
    return seen


@pytest.mark.parametrize("parser", ["numpy", "arrow"])
@pytest.mark.parametrize("gz,overrides,atol", [(False, (), 0.0), (True, ("window.rate=30",), 1e-5),
                                               (False, ("window.nan_policy=drop", "generic.rate=50"), 0.0)])
def test_csv_in_parts_equals_whole(tmp_path, monkeypatch, gz, overrides, atol, parser):
    path = _csv(tmp_path / ("big.csv.gz" if gz else "big.csv"), gz)
    whole, _ = prepare("generic", path, tmp_path / "whole", cfg(*overrides), progress=False)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 5000)  # ~100 rows a part: windows straddle every edge
    seen = _parser(monkeypatch, parser)
    parts, _ = prepare("generic", path, tmp_path / "parts", cfg(*overrides), progress=False)
    assert len(seen) > 10  # read in parts
    assert "s1/r1#0" in parts.recording_names and "s1/r1#1" in parts.recording_names
    _same(whole, parts, atol)


def test_small_one_recording_files_take_the_arrow_parser_and_equal_the_whole_path(tmp_path, monkeypatch):
    """A folder of one-recording CSVs (a cohort's files, the subject from the file name) above STREAM_MIN_BYTES
    goes through pyarrow's parser when it is installed: the same store as the whole-table path."""
    pytest.importorskip("pyarrow")
    import wearspec.data.readers.generic as generic

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        rows = [r.split(",", 3)[0] + "," + r.split(",", 3)[3] for r in _rows(rng, "x", "y", 800, 0.0, gap_at=400)]
        (folder / f"P{k}.csv").write_text("time,ax,ay,az,label\n" + "".join(rows))
    monkeypatch.setattr(generic, "STREAM_MIN_BYTES", 1 << 40)
    whole, _ = prepare("generic", folder, tmp_path / "whole", cfg(), progress=False)
    monkeypatch.setattr(generic, "STREAM_MIN_BYTES", 1000)
    seen = _parser(monkeypatch, "arrow")
    streamed, _ = prepare("generic", folder, tmp_path / "streamed", cfg(), progress=False)
    assert len(seen) >= 3 and whole.subject_names == ["P0", "P1", "P2"]
    _same(whole, streamed)


def test_parquet_in_parts_equals_whole(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 3000
    rng = np.random.default_rng(1)
    t = np.datetime64("2024-01-01T00:00:00", "ns") + (np.arange(n) * 10_000_000).astype("timedelta64[ns]")
    ax = rng.normal(size=n)
    table = pa.table({"time": pa.array(t, type=pa.timestamp("ns")),
                      "acc": pa.array([None if i % 333 == 7 else float(v) for i, v in enumerate(ax)]),
                      "label": pa.array([i // 400 % 2 for i in range(n)], type=pa.int64())})
    pq.write_table(table, tmp_path / "rec.parquet")
    whole, _ = prepare("generic", tmp_path / "rec.parquet", tmp_path / "whole", cfg("window.rate=25"),
                       progress=False)
    monkeypatch.setattr(table_stream, "PARQUET_ROWS", 256)
    parts, _ = prepare("generic", tmp_path / "rec.parquet", tmp_path / "parts", cfg("window.rate=25"),
                       progress=False)
    _same(whole, parts, 1e-5)


@pytest.mark.parametrize("parser", ["numpy", "arrow"])
def test_errors_in_parts_name_the_line(tmp_path, monkeypatch, parser):
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 5000)
    _parser(monkeypatch, parser)
    path = _csv(tmp_path / "big.csv")
    lines = path.read_text().splitlines(keepends=True)
    bad = lines.copy()
    bad[1234] = bad[1234].replace(bad[1234].split(",")[4], "oops", 1)
    (tmp_path / "bad.csv").write_text("".join(bad))
    expect_prepare_error("generic", tmp_path / "bad.csv", tmp_path / "o1", cfg(),
                         "bad.csv, line 1235, column 'ay'", "expected a number", "'oops'")
    back = lines.copy()
    back[1800], back[1801] = back[1801], back[1800]
    (tmp_path / "back.csv").write_text("".join(back))
    expect_prepare_error("generic", tmp_path / "back.csv", tmp_path / "o2", cfg(),
                         "back.csv, line 1802, column 'time'", "timestamps must increase")
    mixed = lines[:1] + lines[1:1000] + lines[2000:2100] + lines[1000:2000]
    (tmp_path / "mixed.csv").write_text("".join(mixed))
    expect_prepare_error("generic", tmp_path / "mixed.csv", tmp_path / "o3", cfg(),
                         "mixed.csv, line 1101", "subject s1, recording r1 start again", "contiguous")
