"""The shared chunked text parsing behind the PAMAP2, Capture-24, Daphnet and WISDM readers."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from wearspec.data.readers import chunks as H
from wearspec.errors import WearspecError


@pytest.mark.parametrize("gz", [False, True])
def test_har_read_chunks_whole_lines(tmp_path: Path, gz: bool):
    lines = [f"{i} {i * 0.5} line{i}" for i in range(1, 501)]
    raw = ("\r\n".join(lines)).encode()  # CRLF, no final newline
    f = tmp_path / ("a.txt.gz" if gz else "a.txt")
    f.write_bytes(gzip.compress(raw) if gz else raw)
    chunks = list(H.read_chunks(f, 1000))
    assert len(chunks) > 5
    assert [c[2] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    line = 1
    for text, first, _ in chunks:
        assert first == line and text.endswith(b"\n")
        tab = H.split_whitespace(text, first, 3, f, ["a", "b", "c"])
        np.testing.assert_array_equal(tab.ints(0), tab.lines)
        line += text.count(b"\n")
    assert line == 501


def test_har_split_whitespace_tabs_blank_lines():
    tab = H.split_whitespace(b"1\t2  3\n\n  4 5 6 \r\n", 10, 3, "f", ["a", "b", "c"])
    assert tab.lines.tolist() == [10, 12]
    np.testing.assert_array_equal(tab.floats(2), [3.0, 6.0])
    with pytest.raises(WearspecError, match=r"^f, line 11: expected 3 space-separated values, got 2$"):
        H.split_whitespace(b"1 2 3\n4 5\n", 10, 3, "f", ["a", "b", "c"])


def test_har_split_delimited_rest_and_quotes():
    tab = H.split_delimited(b'1,2,free, text\n3,4,"quoted, ""text"""\n', 2, 3, "f", ["a", "b", "c"], rest=True)
    assert tab.bytes_list(2) == [b"free, text", b'"quoted, ""text"""']
    with pytest.raises(WearspecError, match=r"f, line 3: quoted value in the fields a, b"):
        H.split_delimited(b'1,2,x\n"3",4,y\n', 2, 3, "f", ["a", "b", "c"], rest=True)


def test_har_table_conversions_name_the_cell():
    tab = H.split_delimited(b"1,2.5,\n2,x,3\n", 1, 3, "f", ["a", "b", "c"])
    with pytest.raises(WearspecError, match=r"^f, line 2, column 2 \(b\): expected a number, got 'x'$"):
        tab.floats(1)
    with pytest.raises(WearspecError, match=r"line 1, column 3 \(c\): expected a number, got ''"):
        tab.floats(2)
    np.testing.assert_array_equal(tab.floats(2, empty_is_nan=True), [np.nan, 3.0])
    np.testing.assert_array_equal(tab.ints(0), [1, 2])
    with pytest.raises(WearspecError, match=r"column 2 \(b\): expected an integer, got '2.5'"):
        tab.ints(1)
    long = H.split_delimited(b"2016-11-13 02:18:00.000000,a\nnot a time,b\n" * 600, 1, 2, "f", ["t", "v"])
    with pytest.raises(WearspecError, match=r"line 2, column 1 \(t\): expected a date-time like 'X', got 'not a time'"):
        long.datetimes(0, "X")


def test_har_check_increasing_and_choice():
    with pytest.raises(WearspecError, match=r"f, line 7: timestamps must increase"):
        H.check_increasing(np.array([0.0, 1.0, 1.0]), np.array([5, 6, 7]), "f")
    with pytest.raises(WearspecError, match=r"k: values must be distinct"):
        H.check_choice(["a", "a"], ["a", "b"], "k")
    assert H.part_name("r", 0, 2) == "r" and H.part_name("r", 1, 2) == "r_part2"


def test_bytes_to_floats_equals_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    v = rng.normal(size=20000) * 10.0 ** rng.integers(-3, 6, 20000)
    for fmt in ("%.5f", "%.4f", "%.10f", "%g", "%.0f", "%.15g", "%.17g"):
        s = np.array([(fmt % x).encode() for x in v])
        assert np.array_equal(H.bytes_to_floats(s).view(np.int64), s.astype(np.float64).view(np.int64)), fmt
    odd = np.array([b"-0.0", b"5.", b".5", b"-.5", b"nan", b" 1.5", b"1e3", b"123456789012345678"])
    assert np.array_equal(H.bytes_to_floats(odd).view(np.int64), odd.astype(np.float64).view(np.int64))
    for bad in (b"1-2", b"--1", b"1.2.3", b"", b"-"):
        with pytest.raises(ValueError):
            H.bytes_to_floats(np.array([b"1.0", bad]))


def test_split_delimited_regular_and_general_paths_agree():
    text = b"1,2,3\r\n4,,6\n7,8,9\n"
    fast = H.split_delimited(text, 2, 3, "f.csv", ["a", "b", "c"])
    slow = H.split_delimited(text.replace(b"4,,6\n", b"4,,6\n\n"), 2, 3, "f.csv", ["a", "b", "c"])  # blank line
    assert fast.floats(2).tolist() == slow.floats(2).tolist() == [3.0, 6.0, 9.0]
    assert fast.lines.tolist() == [2, 3, 4] and slow.lines.tolist() == [2, 3, 5]
    assert fast.floats(1, empty_is_nan=True)[1] != fast.floats(1, empty_is_nan=True)[1]  # NaN
    with pytest.raises(WearspecError, match="f.csv, line 3: expected 3 comma-separated fields, got 2"):
        H.split_delimited(b"1,2,3\n4,5\n", 2, 3, "f.csv", ["a", "b", "c"])
