"""The UEA/UCR ``.ts`` reader on small files the tests write (BasicMotions' layout, shortened)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig, prepare
from wearspec.data.readers.uea import read_ts
from wearspec.errors import WearspecError

HEADER = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 4
@classLabel true standing running
@data
"""


def write(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def test_read_ts_parses_dimensions_labels_and_missing_values(tmp_path):
    f = write(tmp_path / "Tiny_TRAIN.ts", ["1,2,3,4:5,6,7,8:running", "0.5,?,1e-1,-2:0,0,0,0:standing"])
    d = read_ts(f)
    assert d.x.shape == (2, 2, 4) and d.x.dtype == np.float32
    assert np.array_equal(d.x[0], [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert np.isnan(d.x[1, 0, 1]) and d.x[1, 0, 2] == np.float32(0.1)
    assert d.labels == ["running", "standing"] and d.class_labels == ["standing", "running"]
    assert d.header["problemname"] == "Tiny"


@pytest.mark.parametrize("rows, header, message", [
    (["1,2,3,4:5,6,7:running"], HEADER, r"Tiny_TRAIN.ts:11: dimension 1 has 3 values, expected 4"),
    (["1,2,3,4:running"], HEADER, r"Tiny_TRAIN.ts:11: expected 2 dimensions, got 1"),
    (["1,x,3,4:5,6,7,8:running"], HEADER, r"Tiny_TRAIN.ts:11: non-numeric"),
    ([], HEADER, "no series"),
    (["1,2:3,4:a"], HEADER.replace("@timeStamps false", "@timeStamps true"), "timeStamps true is not supported"),
    (["1,2"], "1,2,3\n", r"Tiny_TRAIN.ts:1: expected a @header line"),
])
def test_bad_ts_files_name_the_file_and_line(tmp_path, rows, header, message):
    with pytest.raises(WearspecError, match=message):
        read_ts(write(tmp_path / "Tiny_TRAIN.ts", rows, header))


def test_prepare_uea_folder_keeps_the_archive_split(tmp_path):
    rng = np.random.default_rng(0)

    def rows(n):
        return [":".join(",".join(f"{v:.3f}" for v in rng.normal(size=4)) for _ in range(2)) + f":{lab}"
                for lab in ["standing", "running"] * n]

    folder = tmp_path / "Tiny"
    folder.mkdir()
    write(folder / "Tiny_TRAIN.ts", rows(3))
    write(folder / "Tiny_TEST.ts", rows(2))
    cfg = load_config(PrepareConfig, None, ["window.rate=2", "window.length_s=2", "window.hop_s=2"])
    store, _ = prepare("uea", folder, tmp_path / "store", cfg, progress=False)
    assert len(store) == 10 and store.window == 4 and store.channels == ["dim_0", "dim_1"]
    assert store.label_names == ["standing", "running"]
    assert sorted(store.subject_names) == ["test", "train"]
    test = store.subjects == store.subject_names.index("test")
    assert test.sum() == 4 and (store.splits[test] == 2).all() and (store.splits[~test] == 0).all()
    with pytest.raises(WearspecError, match="no .ts files"):
        prepare("uea", tmp_path / "store", tmp_path / "other", cfg, progress=False)
