"""Integrity: checksums of stores, checkpoints and bundles verified before use; output-folder locks; a final
rename that never replaces what it did not check. Each case asserts the error line, the exit status, and that
what was there before is byte for byte unchanged (a digest of the whole folder before and after)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wearspec.cli import main
from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig, prepare
from wearspec.data.store import StoreWriter, WindowStore
from wearspec.errors import WearspecError
from wearspec.utils.checkpoint import latest_checkpoint, load_checkpoint, load_torch, save_checkpoint, save_torch
from wearspec.utils.integrity import lock_path, output_lock, sha256_file, sidecar_path

SYNTH = ["synthetic.subjects=3", "synthetic.minutes_per_subject=1"]


def tree_digest(folder: Path) -> str:
    """SHA-256 over every file below ``folder`` (relative path and content), to prove nothing changed."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def flip(path: Path, offset: int | None = None) -> None:
    """Flip one bit of ``path`` (in the middle unless ``offset``), keeping its size and name."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(err: str, *words: str) -> str:
    """stderr holds exactly one ``wearspec: error:`` line (after any warnings) with every word."""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("wearspec: warning:")]
    assert len(lines) == 1 and lines[0].startswith("wearspec: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def store(tmp_path) -> Path:
    out = tmp_path / "store"
    prepare("synthetic", None, out, load_config(PrepareConfig, None, SYNTH), progress=False)
    return out


# ---- stores -----------------------------------------------------------------------------------------------
def test_store_records_checksums_and_verifies(store, capsys):
    m = json.loads((store / "manifest.json").read_text())
    assert all(sha256_file(store / s["file"]) == s["sha256"] for s in m["shards"])
    assert m["index_sha256"] == sha256_file(store / "index.npz")
    rc, out, err = cli(capsys, "inspect", "--verify", "--no-png", store)
    assert rc == 0 and "checksums match, every value finite" in out and err == ""


def test_flipped_shard_is_refused_everywhere(store, tmp_path, capsys):
    flip(store / "shards" / "00000.bin")
    before = tree_digest(store)
    rc, _, err = cli(capsys, "inspect", "--verify", "--no-png", store)
    assert rc == 2
    one_error(err, "shards/00000.bin", "checksum mismatch", "damaged after it was written")
    # prepare on the same inputs no longer says "up to date"
    rc, out, err = cli(capsys, "prepare", "synthetic", "-o", store, *SYNTH)
    assert rc == 2 and "up to date" not in out
    one_error(err, "shards/00000.bin", "checksum mismatch", "--overwrite")
    # pretraining refuses it before writing anything
    run = tmp_path / "run"
    rc, _, err = cli(capsys, "pretrain", f"store={store}", f"output={run}", "runtime.device=cpu")
    assert rc == 2
    one_error(err, "shards/00000.bin", "checksum mismatch")
    assert not run.exists() and not lock_path(run).exists()
    assert tree_digest(store) == before
    # --overwrite prepares it again, intact
    assert cli(capsys, "prepare", "synthetic", "-o", store, "--overwrite", *SYNTH)[0] == 0
    assert WindowStore(store).verify()["checksums"]


def _as_old_store(store: Path) -> None:
    """Drop the checksums from the manifest, as a store written before they were recorded."""
    m = json.loads((store / "manifest.json").read_text())
    m.pop("index_sha256")
    for s in m["shards"]:
        s.pop("sha256")
    (store / "manifest.json").write_text(json.dumps(m))


def test_nan_in_a_shard_names_the_window(store, capsys):
    _as_old_store(store)
    st = WindowStore(store)
    row = st.n_channels * st.window * 4
    with open(store / "shards" / "00000.bin", "r+b") as f:  # window 5, channel 1, sample 3
        f.seek(5 * row + (st.window + 3) * 4)
        f.write(np.float32(np.nan).tobytes())
    rc, _, err = cli(capsys, "inspect", "--no-png", store)  # verified by default
    assert rc == 2
    subject, start = st.subject_names[st.subjects[5]], st.starts[5]
    one_error(err, "shards/00000.bin", f"window 5 (subject {subject}", f"start {start:g} s", "NaN/Inf")
    assert "records no checksums" in err
    assert cli(capsys, "inspect", "--no-verify", "--no-png", store)[0] == 0  # the index alone: counts only


def test_old_store_opens_with_one_warning(store, capsys):
    _as_old_store(store)
    a, b = WindowStore(store).verify(), WindowStore(store).verify()
    assert not a["checksums"] and not b["checksums"]
    assert capsys.readouterr().err.count("records no checksums") == 1


def test_damaged_index_is_one_error_line(store, capsys):
    (store / "index.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    for argv in (["inspect", "--no-png", store], ["prepare", "synthetic", "-o", store, *SYNTH]):
        rc, _, err = cli(capsys, *argv)
        assert rc == 2
        one_error(err, "index.npz", "checksum mismatch")
    _as_old_store(store)  # without a recorded checksum: the zip error, in one line
    rc, _, err = cli(capsys, "inspect", "--no-png", store)
    assert rc == 2
    one_error(err, "index.npz", "unreadable window index")


def test_store_rename_refuses_a_folder_filled_meanwhile(tmp_path):
    out = tmp_path / "st"
    writer = StoreWriter(out, channels=["a"], rate=1, window=2, hop=1, fingerprint="mine")
    writer.add(np.zeros((3, 1, 2), np.float32), "s", "r", np.arange(3.0))
    with StoreWriter(out, channels=["b"], rate=1, window=2, hop=1, fingerprint="theirs") as other:
        other.add(np.ones((2, 1, 2), np.float32), "s", "r", np.arange(2.0))
    before = tree_digest(out)
    with pytest.raises(WearspecError, match="filled while this store was written"):
        writer.close()
    assert tree_digest(out) == before and WindowStore(out).manifest["fingerprint"] == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]


# ---- locks ------------------------------------------------------------------------------------------------
HOLD = ("import sys, time\nfrom wearspec.utils.integrity import output_lock\n"
        "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_stops_with_one_line(store, tmp_path, capsys):
    before = tree_digest(store)
    holder = _holder(store)
    try:
        rc, _, err = cli(capsys, "prepare", "synthetic", "-o", store, "--overwrite", "synthetic.subjects=4")
        assert rc == 2
        one_error(err, str(store), f"being written by another wearspec process (pid {holder.pid})")
        run = tmp_path / "run"
        holder_run = _holder(run)
        try:
            rc, _, err = cli(capsys, "pretrain", f"store={store}", f"output={run}", "runtime.device=cpu")
            assert rc == 2
            one_error(err, f"pid {holder_run.pid}")
        finally:
            holder_run.kill()
            holder_run.wait()
    finally:
        holder.kill()
        holder.wait()
    assert tree_digest(store) == before
    # once the holder is gone the folder is free again; a lock is re-entrant within one process
    with output_lock(store), output_lock(store):
        assert lock_path(store).is_file()
    assert not lock_path(store).exists()


def test_two_prepare_processes_race_for_one_folder(tmp_path):
    out = tmp_path / "race"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmds = [[sys.executable, "-m", "wearspec", "prepare", "synthetic", "-o", str(out), f"synthetic.subjects={n}",
             "synthetic.minutes_per_subject=2"] for n in (3, 4)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in cmds]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    line = one_error(loser[2])
    assert "being written by another wearspec process" in line or "already holds a different store" in line
    winner = cmds[[r[0] for r in results].index(0)]
    store = WindowStore(out)
    assert store.verify()["checksums"] and len(store.subject_names) == int(winner[-2].split("=")[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]  # no temporary folder, no lock file left


# ---- checkpoints ------------------------------------------------------------------------------------------
def _state(v: float) -> dict:
    return {"step": int(v), "w": torch.full((64, 64), v)}


def test_checkpoint_sidecar_and_fallback(tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    for step in (1, 2):
        save_checkpoint(_state(step), folder, step, keep_last=2)
    newest = folder / "ckpt-00000002.pt"
    assert sidecar_path(newest).read_text().split() == [sha256_file(newest), newest.name]
    flip(newest, newest.stat().st_size - 2000)  # inside the tensor payload: torch.load alone would accept it
    before = tree_digest(folder)
    assert latest_checkpoint(folder).name == "ckpt-00000001.pt"
    err = capsys.readouterr().err
    assert f"skipping damaged checkpoint {newest}" in err and "checksum mismatch" in err
    with pytest.raises(WearspecError, match=r"ckpt-00000002\.pt: checksum mismatch"):
        load_checkpoint(newest)
    assert load_checkpoint(folder)["step"] == 1
    assert tree_digest(folder) == before
    save_checkpoint(_state(3), folder, 3, keep_last=2)  # keep-last removes the sidecars with their files
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt-00000002.pt", "ckpt-00000002.pt.sha256",
                                                          "ckpt-00000003.pt", "ckpt-00000003.pt.sha256"]


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (str(Path(os.environ["TMPDIR"]) / "payload-ran"),))


def test_raw_pickle_and_truncated_files_are_one_line(tmp_path, capfd):
    raw = tmp_path / "holdout" / "frontend.pt"
    raw.parent.mkdir()
    raw.write_bytes(pickle.dumps({"settings": _Payload()}))
    truncated = tmp_path / "truncated.pt"
    save_torch(_state(1), truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    sidecar_path(truncated).unlink()  # as a file without a checksum (an older run)
    for path in (raw, truncated):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with pytest.raises(WearspecError) as info:
                load_torch(path)
        assert str(info.value).startswith(f"{path}: not a wearspec checkpoint (cannot load it safely")
        assert "\n" not in str(info.value) and not seen
    assert capfd.readouterr().err == ""
    assert not (Path(os.environ["TMPDIR"]) / "payload-ran").exists()


def test_pretraining_resumes_from_the_intact_checkpoint(store, tmp_path, capfd):
    tiny = ["backbone.embed_dim=32", "backbone.depth=1", "backbone.num_heads=2", "head.out_dim=64",
            "head.hidden_dim=32", "head.bottleneck_dim=16", "optim.batch_size=16", "crops.n_local=0",
            "frontend.fit_windows=32", "runtime.device=cpu", "runtime.ckpt_every=2", "runtime.keep_last=2",
            "runtime.max_steps=4"]
    run = tmp_path / "run"
    argv = ["pretrain", f"store={store}", f"output={run}", *tiny]
    assert main(argv) == 0
    newest = run / "checkpoints" / "ckpt-00000004.pt"
    intact = load_checkpoint(newest)["teacher_net"]
    flip(newest, newest.stat().st_size - 4000)
    capfd.readouterr()
    assert main(argv) == 0
    assert f"skipping damaged checkpoint {newest}" in capfd.readouterr().err
    again = load_checkpoint(newest)["teacher_net"]  # steps 3-4 trained again from step 2: the same weights
    assert all(torch.equal(intact[k], again[k]) for k in intact)


# ---- bundles ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory) -> Path:
    from test_export import make_classifier

    from wearspec.models.classifier import save_classifier

    clf, meta = make_classifier("cnn")
    return save_classifier(tmp_path_factory.mktemp("clf") / "stage" / "best.pt", clf, meta)


def test_export_refuses_a_flipped_checkpoint(classifier_ckpt, tmp_path, capsys):
    bad = tmp_path / "best.pt"
    bad.write_bytes(classifier_ckpt.read_bytes())
    sidecar_path(bad).write_text(sidecar_path(classifier_ckpt).read_text().replace(classifier_ckpt.name, bad.name))
    flip(bad, bad.stat().st_size - 3000)
    out = tmp_path / "bundle"
    rc, _, err = cli(capsys, "export", f"checkpoint={bad}", f"output={out}", "int8=false", "fp16_check=false",
                     "parity_windows=4")
    assert rc == 2
    one_error(err, "best.pt: checksum mismatch")
    assert not out.exists() and not lock_path(out).exists()


def test_flipped_bundle_is_refused_and_bundles_are_not_replaced(classifier_ckpt, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bundle"
    args = ["export", f"checkpoint={classifier_ckpt}", f"output={out}", "int8=false", "fp16_check=false",
            "parity_windows=4"]
    assert cli(capsys, *args)[0] == 0
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 3, 200), np.float32))
    assert cli(capsys, "engine", "run", out, "--backend", "onnxruntime", "--input", x)[0] == 0
    flip(out / "model.onnx")
    before = tree_digest(out)
    rc, _, err = cli(capsys, "engine", "run", out, "--backend", "onnxruntime", "--input", x)
    assert rc == 2
    one_error(err, "model.onnx", "changed after export")
    # a bundle that appears in the output folder while another is written is refused, not replaced
    import wearspec.deploy.bundle as bundle_mod

    other = tmp_path / "other"
    real = bundle_mod.validate_bundle

    def appears(meta, folder, source=None, verify=True):
        other.mkdir(exist_ok=True)
        (other / "notes.txt").write_text("someone else's")
        return real(meta, folder, source, verify)

    monkeypatch.setattr(bundle_mod, "validate_bundle", appears)
    rc, _, err = cli(capsys, *[a.replace(f"output={out}", f"output={other}") for a in args])
    assert rc == 2
    one_error(err, str(other), "holds no deploy bundle; refusing to replace it")
    assert (other / "notes.txt").read_text() == "someone else's" and sorted(p.name for p in other.iterdir()) == [
        "notes.txt"]
    assert tree_digest(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # an engine is built into the bundle folder: not while another process writes that bundle
    holder = _holder(out)
    try:
        rc, _, err = cli(capsys, "engine", "build", out)
        assert rc == 2
        one_error(err, str(out), f"being written by another wearspec process (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()


def test_lock_waits_for_nobody(tmp_path):
    """Taking a free lock is immediate, and releasing removes the folders it had to create."""
    t0 = time.perf_counter()
    with output_lock(tmp_path / "a" / "b" / "out"):
        assert lock_path(tmp_path / "a" / "b" / "out").read_text().strip() == str(os.getpid())
    assert time.perf_counter() - t0 < 5 and list(tmp_path.iterdir()) == []
