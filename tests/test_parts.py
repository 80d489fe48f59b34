"""Many input files: parts per file, jobs, resume, keep-going, shards, merged into one store."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import expect_prepare_error
from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig, prepare
from wearspec.errors import WearspecError


def cfg(*overrides: str) -> PrepareConfig:
    return load_config(PrepareConfig, overrides=["window.length_s=2", "window.hop_s=1", "generic.labels=[a,b]",
                                                 *overrides])


def write(folder, name, n=400, seed=0, label="a"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    rows = "".join(f"{i / 50:.4f},{x[i, 0]:.5f},{x[i, 1]:.5f},{label if i < n // 2 else 'b'}\n" for i in range(n))
    (folder / name).write_text("time,ax,ay,label\n" + rows)


def _same(a, b):
    assert a.subject_names == b.subject_names and a.recording_names == b.recording_names
    assert a.label_names == b.label_names and len(a) == len(b)
    for k in ("subjects", "recordings", "labels", "starts"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    np.testing.assert_array_equal(a.read_batch(range(len(a))), b.read_batch(range(len(b))))


def test_parts_in_parallel_equal_one_store_and_resume(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(4):
        write(inp, f"S{k}.csv", seed=k)
    whole, _ = prepare("generic", inp, tmp_path / "whole", cfg(), progress=False)
    merged, reused = prepare("generic", inp, tmp_path / "out", cfg("jobs=2"), progress=False)
    assert not reused and sorted(merged.meta["parts"]) == [f"S{k}.csv" for k in range(4)]
    _same(whole, merged)
    # the merged store carries every part's shard checksums and its own index checksum, and they hold
    shards = merged.manifest["shards"]
    assert merged.manifest.get("index_sha256") and all(sh.get("sha256") for sh in shards)
    merged.verify()
    stamp = (tmp_path / "out" / "parts" / "S0.csv" / "manifest.json").stat().st_mtime_ns
    again, reused = prepare("generic", inp, tmp_path / "out", cfg("jobs=2"), progress=False)
    assert reused and len(again) == len(merged)
    write(inp, "S9.csv", seed=9)  # a new file: only it is prepared
    grown, reused = prepare("generic", inp, tmp_path / "out", cfg("jobs=2"), progress=False)
    assert not reused and grown.subject_names[-1] == "S9" and len(grown) > len(merged)
    assert (tmp_path / "out" / "parts" / "S0.csv" / "manifest.json").stat().st_mtime_ns == stamp


def test_shards_then_merge_and_keep_going(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(5):
        write(inp, f"S{k}.csv", seed=k)
    lines = (inp / "S2.csv").read_text().splitlines()
    lines[6] = "0.1000,1.0,oops,a"
    (inp / "S2.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(WearspecError, match=r"S2.csv, line 7, column 'ay'.*'oops'"):
        prepare("generic", inp, tmp_path / "stop", cfg("jobs=2"), progress=False)
    assert not (tmp_path / "stop" / "manifest.json").exists()  # finished parts stay, for a re-run
    first, _ = prepare("generic", inp, out, cfg("shard=1/2", "keep_going=true"), progress=False)
    assert first.subject_names == ["S0", "S4"] and first.meta["failed"][0]["file"].endswith("S2.csv")
    both, _ = prepare("generic", inp, out, cfg("shard=2/2", "keep_going=true"), progress=False)
    assert both.subject_names == ["S0", "S1", "S3", "S4"]
    both.verify()  # a store merged from two machines' parts verifies
    shard = out / both.manifest["shards"][-1]["file"]
    data = bytearray(shard.read_bytes())
    data[7] ^= 0xFF
    shard.write_bytes(bytes(data))
    from wearspec.data.store import WindowStore

    with pytest.raises(WearspecError, match="checksum"):
        WindowStore(out).verify()
    expect_prepare_error("generic", inp, tmp_path / "o2", cfg("shard=3/2"), "shard", "i/n")
    expect_prepare_error("pamap2", inp, tmp_path / "o3", cfg("jobs=2"), "reads its dataset as a whole")


def test_device_files_in_parts_with_a_mapping_csv(tmp_path):
    pytest.importorskip("actfast")
    from datetime import datetime

    from devicefiles import write_cwa

    inp = tmp_path / "cohort"
    (inp / "b").mkdir(parents=True)
    acc = np.tile([0.0, 0.0, 1.0], (50 * 12, 1))
    write_cwa(inp / "d1.cwa", acc, 50.0, datetime(2024, 5, 1, 10))
    write_cwa(inp / "b" / "d2.cwa", acc, 50.0, datetime(2024, 5, 1, 11))
    (inp / "ids.csv").write_text("file,subject\nd1.cwa,P1\nb/d2.cwa,P2\n")
    store, _ = prepare("device", inp, tmp_path / "out", cfg("jobs=2", "device.subjects_csv=ids.csv"), progress=False)
    assert store.subject_names == ["P2", "P1"] and sorted(store.meta["devices"]) == ["d1.cwa", "d2.cwa"]
    assert store.meta["parts"] == ["b__d2.cwa", "d1.cwa"] and 20 <= len(store) <= 22  # parts in name order


def test_device_files_from_a_list(tmp_path):
    pytest.importorskip("actfast")
    from datetime import datetime

    from devicefiles import write_cwa

    acc = np.tile([0.0, 0.0, 1.0], (50 * 12, 1))
    for name in ("a/P1.cwa", "b/P2.cwa", "c/P3.cwa"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_cwa(tmp_path / name, acc, 50.0, datetime(2024, 5, 1, 10))
    (tmp_path / "files.txt").write_text("a/P1.cwa\n# not this one: c/P3.cwa\nb\n")
    store, _ = prepare("device", tmp_path / "files.txt", tmp_path / "out", cfg("jobs=2"), progress=False)
    assert store.subject_names == ["P1", "P2"] and store.meta["parts"] == ["a__P1.cwa", "b__P2.cwa"]
    one, _ = prepare("device", tmp_path / "files.txt", tmp_path / "one", cfg(), progress=False)
    assert one.subject_names == ["P1", "P2"]


def test_the_command_line_flags_are_the_settings(tmp_path, capsys):
    from wearspec.cli import main
    from wearspec.data.store import WindowStore

    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(4):
        write(inp, f"S{k}.csv", seed=k)
    (inp / "S9.csv").write_text("time,ax,ay,label\n0.0,1.0,oops,a\n")
    common = ["prepare", "generic", str(inp), "-o", str(tmp_path / "out"), "window.length_s=2", "window.hop_s=1",
              "generic.labels=[a,b]"]
    assert main([*common, "--shard", "1/2", "--keep-going", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "shard: 1/2" in printed and "keep_going: true" in printed
    assert main([*common, "--jobs", "2", "--keep-going"]) == 0
    store = WindowStore(tmp_path / "out")
    assert store.subject_names == ["S0", "S1", "S2", "S3"] and store.meta["failed"][0]["file"].endswith("S9.csv")
    assert main([*common, "--jobs", "0"]) == 2 and "jobs" in capsys.readouterr().err
