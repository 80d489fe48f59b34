"""Bad input on the command line: one line ``wearspec: error: …`` naming the file or setting and what was expected,
exit status 2, no traceback, and nothing written (no output folder, or the previous one unchanged).

Every case runs in-process through :func:`wearspec.cli.main`; models and data are tiny.
"""

from __future__ import annotations

import errno
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest

from wearspec.cli import main

TINY_DATA = ["synthetic.subjects=3", "synthetic.minutes_per_subject=1"]
TINY_PT = ["backbone.embed_dim=32", "backbone.depth=1", "backbone.num_heads=2", "head.out_dim=16",
           "head.hidden_dim=16", "head.bottleneck_dim=8", "optim.batch_size=8", "crops.n_local=1",
           "frontend.fit_windows=16", "runtime.device=cpu"]
C, T, HOP, K, RATE = 3, 20, 10, 4, 10.0


def _tree_hash(folder: Path) -> str | None:
    """sha256 over the names and bytes of every file below ``folder`` (None: no such folder)."""
    if not folder.exists():
        return None
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def expect_error(capsys, argv: list[str], *words: str, unchanged: Path | None = None) -> str:
    """``main(argv)`` exits 2 with one ``wearspec: error:`` line holding every word, no traceback; the folder
    ``unchanged`` (absent, or holding an earlier output) is exactly as it was."""
    before = _tree_hash(unchanged) if unchanged is not None else None
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("wearspec: error: ")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    if unchanged is not None:
        assert _tree_hash(unchanged) == before, f"{unchanged} changed"
        leftovers = list(unchanged.parent.glob(f".{unchanged.name}.tmp-*")) if unchanged.parent.exists() else []
        assert not leftovers
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "store"
    assert main(["prepare", "synthetic", "-o", str(out), *TINY_DATA]) == 0
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_runtime import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


# ---------------------------------------------------------------------------- settings out of range
RECIPE_CASES = [
    ("pretrain", ["optim.lr=-1"], ["optim.lr", "≥ 0", "-1"]),
    ("pretrain", ["optim.lr=nan"], ["optim.lr", "finite"]),
    ("pretrain", ["runtime.ckpt_every=-1"], ["runtime.ckpt_every", "≥ 1"]),
    ("pretrain", ["runtime.max_steps=-5"], ["runtime.max_steps", "≥ 0"]),
    ("pretrain", ["runtime.num_workers=-1"], ["runtime.num_workers", "≥ 0"]),
    ("pretrain", ["runtime.seed=-3"], ["runtime.seed", "[0, 4294967295]"]),
    ("pretrain", ["runtime.progress_s=0"], ["runtime.progress_s", "> 0"]),
    ("pretrain", ["optim.epochs=.inf"], ["optim.epochs", "an integer or null"]),
    ("pretrain", ["optim.momentum_teacher=1.5"], ["optim.momentum_teacher", "[0, 1]"]),
    ("pretrain", ["loss.teacher_temp=0"], ["loss.teacher_temp", "> 0"]),
    ("pretrain", ["loss.center_momentum=-0.1"], ["loss.center_momentum", "[0, 1]"]),
    ("pretrain", ["head.nlayers=0"], ["head.nlayers", "≥ 1"]),
    ("pretrain", ["crops.n_global=0"], ["crops", "n_global"]),
    ("pretrain", ["augment.noise_p=2"], ["augment.noise_p", "out of range"]),
    ("pretrain", ["frontend.window=box"], ["frontend.window", "hann"]),
    ("pretrain", ["frontend.n_mels=-1"], ["frontend.n_mels", "≥ 0"]),
    ("pretrain", ["optim.warmup_epochs=-1"], ["optim.warmup_epochs", "≥ 0"]),
    ("pretrain", ["output="], ["output", "empty path"]),
    ("finetune", ["output= "], ["output", "empty path"]),
    ("finetune", ["teacher.lr=-1"], ["teacher.lr", "≥ 0"]),
    ("finetune", ["student.patience=-1"], ["student.patience", "≥ 0"]),
    ("finetune", ["teacher.epochs=0"], ["teacher.epochs", "≥ 1"]),
    ("finetune", ["student.distill.alpha=2"], ["distill", "alpha"]),
    ("finetune", ["label_fraction=0"], ["label_fraction", "(0, 1]"]),
    ("finetune", ["split.mode=kfold", "split.k=0"], ["split.k", "at least 2"]),
    ("finetune", ["split.seed=-1"], ["split.seed"]),
    ("probe", ["seed=-1"], ["seed"]),
    ("probe", ["device=banana"], ["device", "expected auto, cpu or cuda"]),
    ("probe", ["knn_k=0"], ["knn_k", "≥ 1"]),
    ("probe", ["linear.lrs=[-1]"], ["linear.lrs", "positive"]),
    ("export", ["parity_windows=0"], ["parity_windows", "≥ 1"]),
    ("export", ["parity_atol=-1"], ["parity_atol", "> 0"]),
]


@pytest.mark.parametrize("command,overrides,words", RECIPE_CASES,
                         ids=[f"{c}-{o[0]}" for c, o, _ in RECIPE_CASES])
def test_recipe_settings_out_of_range(tmp_path, capsys, store, command, overrides, words):
    out = tmp_path / "out"
    expect_error(capsys, [command, f"store={store}", f"output={out}", *overrides], *words, unchanged=out)


PREPARE_CASES = [
    (["window.rate=1e9"], ["window.length_s", "5000000000 samples", "at most"]),
    (["window.rate=1e5", "window.length_s=1"], ["window.rate", "cannot resample", "50 Hz"]),
    (["window.length_s=.nan"], ["window.length_s", "finite"]),
    (["window.rate=abc"], ["window.rate", "expected a number"]),
    (["synthetic.seed=-1"], ["synthetic.seed"]),
    (["store.shard_windows=0"], ["store.shard_windows", "≥ 1"]),
    (["synthetic.rate=1e9"], ["synthetic.minutes_per_subject", "at most", "synthetic.rate"]),
]


@pytest.mark.parametrize("overrides,words", PREPARE_CASES, ids=[o[0] for o, _ in PREPARE_CASES])
def test_prepare_settings_out_of_range(tmp_path, capsys, overrides, words):
    out = tmp_path / "out"
    expect_error(capsys, ["prepare", "synthetic", "-o", out, *TINY_DATA, *overrides], *words, unchanged=out)


# ---------------------------------------------------------------------------- output paths
def test_output_under_a_regular_file(tmp_path, capsys, store):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    for argv, words in (
        (["prepare", "synthetic", "-o", afile / "x", *TINY_DATA], ["-o/--output", "afile is a file"]),
        (["prepare", "synthetic", "-o", afile, *TINY_DATA], ["afile: is a file", "expected a folder"]),
        (["pretrain", f"store={store}", f"output={afile}"], ["output", "afile: is a file"]),
        (["pretrain", f"store={store}", f"output={afile}/run"], ["afile is a file, not a folder"]),
        (["finetune", f"store={store}", f"output={afile}/ft"], ["afile is a file, not a folder"]),
    ):
        expect_error(capsys, argv, *words)
    assert afile.read_text() == "keep me\n"


def test_disk_full_during_prepare(tmp_path, capsys, monkeypatch):
    from wearspec.data import store as store_mod

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.StoreWriter, "add", full)
    out = tmp_path / "deep" / "store"
    expect_error(capsys, ["prepare", "synthetic", "-o", out, *TINY_DATA], str(out), "disk is full")
    assert not (tmp_path / "deep").exists()   # the folders this command created are gone too


def test_disk_full_keeps_an_existing_store(tmp_path, capsys, monkeypatch):
    from wearspec.data import store as store_mod

    out = tmp_path / "store"
    assert main(["prepare", "synthetic", "-o", str(out), *TINY_DATA]) == 0

    def full(self, *args, **kwargs):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(store_mod.StoreWriter, "add", full)
    expect_error(capsys, ["prepare", "synthetic", "-o", out, *TINY_DATA, "synthetic.seed=3", "--overwrite"],
                 str(out), "quota", unchanged=out)


def test_disk_full_during_a_checkpoint_write(tmp_path, capsys, monkeypatch, store):
    import torch

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "pt"
    expect_error(capsys, ["pretrain", f"store={store}", f"output={out}", *TINY_PT, "optim.epochs=1",
                          "runtime.max_steps=1", "runtime.ckpt_every=1"], "cannot write", "disk is full",
                 unchanged=out)


def test_finetune_failure_leaves_no_config_yaml(tmp_path, capsys, store):
    out = tmp_path / "ft"
    expect_error(capsys, ["finetune", f"store={store}", f"output={out}", "runtime.device=cpu",
                          "frontend.n_fft=100000"], "frontend.n_fft", "at most", unchanged=out)


def test_inspect_flags(tmp_path, capsys, store):
    afile = tmp_path / "afile"
    afile.write_text("")
    before = _tree_hash(store)
    expect_error(capsys, ["inspect", store, "--per-class", "0"], "--per-class", "≥ 1")
    expect_error(capsys, ["inspect", store, "--png", afile / "grid.png"], "--png", "afile: is a file")
    expect_error(capsys, ["inspect", store, "--png", tmp_path], "--png", "is a folder")
    assert _tree_hash(store) == before


# ---------------------------------------------------------------------------- input files of prepare
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "in-parts"])
def test_prepare_value_beyond_float32(tmp_path, capsys, monkeypatch, streamed):
    from wearspec.data.readers import chunks

    if streamed:   # a file larger than one chunk is read in parts
        monkeypatch.setattr(chunks, "CHUNK_BYTES", 5000)
    rows = [f"{i / 50},s1,{1e300 if i == 7 else 0.1},0.2,0.3" for i in range(600)]
    src = tmp_path / "a.csv"
    src.write_text("time,subject,ax,ay,az\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    expect_error(capsys, ["prepare", "generic", src, "-o", out], "a.csv, line 9", "'ax'", "1e+300",
                 "float32 range", unchanged=out)


def test_prepare_npy_of_random_bytes(tmp_path, capsys):
    folder = tmp_path / "np"
    folder.mkdir()
    (folder / "X.npy").write_bytes(np.random.default_rng(0).bytes(400))
    out = tmp_path / "out"
    msg = expect_error(capsys, ["prepare", "generic", folder, "-o", out, "generic.rate=50"], "X.npy",
                       "not a valid .npy file", unchanged=out)
    assert "Python objects" not in msg


# ---------------------------------------------------------------------------- stream and engine
def _recording(n: int = 60) -> np.ndarray:
    t = np.arange(n)[:, None]
    return np.sin(t / 7.0 + np.arange(C)).astype(np.float32)


def _write_sources(folder: Path) -> dict[str, Path]:
    np.save(folder / "ok.npy", _recording())
    (folder / "trunc.npy").write_bytes((folder / "ok.npy").read_bytes()[:200])
    (folder / "rand.npy").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "latin.csv").write_bytes(b"ax,ay,az\n1,2,3\n\xff\xfe,1,2\n")
    (folder / "empty.csv").write_text("")
    (folder / "header.csv").write_text("ax,ay,az\n")
    (folder / "nan.csv").write_text("ax,ay,az\n" + "nan,,nan\n" * 50)
    times = list(np.arange(30) / RATE) * 2
    (folder / "back.csv").write_text("time_s,ax,ay,az\n" + "".join(f"{t},1,2,3\n" for t in times))
    np.save(folder / "windows.npy", np.zeros((2, C, T), np.float32))
    np.save(folder / "two.npy", np.zeros((30, 2), np.float32))
    np.save(folder / "text.npy", np.array([["a"] * C] * 30))
    return {p.stem: p for p in folder.iterdir()}


STREAM_CASES = [
    ("latin", [], ["latin.csv, line 3", "not UTF-8"]),
    ("trunc", [], ["trunc.npy", "truncated"]),
    ("rand", [], ["rand.npy", "not a valid .npy file"]),
    ("two", [], ["two.npy", "expected 3 channel columns"]),
    ("text", [], ["text.npy", "expected numbers"]),
    ("windows", [], ["windows.npy", "(samples, channels)"]),
    ("empty", [], ["empty.csv", "no complete window", "0 samples"]),
    ("header", [], ["header.csv", "no complete window"]),
    ("nan", [], ["nan.csv", "every value", "missing", "samples 1–50"]),
    ("back", [], ["time goes backwards", "sample 31", "--max-gap-s"]),
    ("ok", ["--hop", "0"], ["--hop", "≥ 1"]),
    ("ok", ["--chunk", "0"], ["--chunk", "≥ 1"]),
    ("ok", ["--smoothing", "0"], ["--smoothing", "≥ 1"]),
    ("ok", ["--max-nan-fraction", "nan"], ["--max-nan-fraction", "[0, 1]"]),
    ("ok", ["--max-gap-s", "-1"], ["--max-gap-s", "positive"]),
]


@pytest.mark.parametrize("source,flags,words", STREAM_CASES, ids=[f"{s}{''.join(f)}" for s, f, _ in STREAM_CASES])
def test_stream_bad_input(tmp_path, capsys, bundle, source, flags, words):
    sources = _write_sources(tmp_path)
    before = _tree_hash(bundle)
    expect_error(capsys, ["stream", bundle, "--source", sources[source], *flags], *words)
    assert _tree_hash(bundle) == before


def test_stream_backwards_time_is_fine_with_max_gap(tmp_path, capsys, bundle):
    sources = _write_sources(tmp_path)
    assert main(["stream", str(bundle), "--source", str(sources["back"]), "--max-gap-s", "1"]) == 0
    assert "1 resets" in capsys.readouterr().err


@pytest.mark.parametrize("data,words", [(b"\xff\xfe\x00\x01binary\n", ["<stdin>, line 1", "not UTF-8"]),
                                        (b"", ["<stdin>", "no complete window"])])
def test_stream_stdin(capsys, monkeypatch, bundle, data, words):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8",
                                                       errors="surrogateescape"))
    expect_error(capsys, ["stream", bundle, "--source", "-"], *words)


def test_stream_warns_about_windows_with_no_value(tmp_path, capsys, bundle):
    x = _recording(60)
    x[20:45] = np.nan          # a window (20 samples) with no valid value at all
    np.save(tmp_path / "gap.npy", x)
    assert main(["stream", str(bundle), "--source", str(tmp_path / "gap.npy")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "no valid value" in err


ENGINE_CASES = [
    (["run", "--input", "{trunc}"], ["trunc.npy", "truncated"]),
    (["run", "--input", "{rand}"], ["rand.npy", "not a valid .npy file"]),
    (["run", "--input", "{ok}"], ["ok.npy", "(n, C, T)"]),
    (["run", "--input", "{missing}"], ["missing.npy", "no such file"]),
    (["run", "--input", "{nanwin}"], ["nanwin.npy", "windows [1]", "NaN"]),
    (["run"], ["--input"]),
    (["bench", "--batch-sizes", "a,b"], ["--batch-sizes", "integers ≥ 1", "'a,b'"]),
    (["bench", "--batch-sizes", "0,4"], ["--batch-sizes"]),
    (["bench", "--iterations", "0"], ["--iterations ≥ 1"]),
    (["build", "--min-batch", "0"], ["batch profile"]),
    (["build", "--workspace-mb", "-1"], ["--workspace-mb"]),
]


@pytest.mark.parametrize("flags,words", ENGINE_CASES, ids=["-".join(f) for f, _ in ENGINE_CASES])
def test_engine_inputs_are_checked_before_tensorrt(tmp_path, capsys, bundle, flags, words):
    sources = _write_sources(tmp_path)
    sources["missing"] = tmp_path / "missing.npy"
    sources["nanwin"] = tmp_path / "nanwin.npy"
    np.save(sources["nanwin"], np.stack([np.zeros((C, T)), np.full((C, T), np.nan)]).astype(np.float32))
    flags = [f.format(**sources) for f in flags]
    expect_error(capsys, ["engine", flags[0], bundle, *flags[1:]], *words)


@pytest.mark.parametrize("error,words", [
    (OSError(errno.ENOSPC, "No space left on device"), ["out/x.bin", "cannot write", "disk is full"]),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x.bin"), ["/ro/x.bin", "read-only"]),
    (PermissionError(errno.EACCES, "Permission denied", "/p/x"), ["/p/x", "permission denied"]),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), ["out/x.bin", "disk is full"]),
])
def test_write_error_names_the_file(error, words):
    from wearspec.errors import write_error

    msg = str(write_error(error, "out/x.bin"))
    for w in words:
        assert w in msg


def test_write_error_leaves_other_errors_alone():
    from wearspec.errors import write_error

    assert write_error(OSError(errno.EIO, "I/O error")) is None
    assert write_error(RuntimeError("shapes do not match")) is None


def test_feature_device_is_checked():
    from wearspec.errors import WearspecError
    from wearspec.evaluate.features import resolve_device

    with pytest.raises(WearspecError, match=r"^device=cuda:99: "):
        resolve_device("cuda:99")
    with pytest.raises(WearspecError, match="device: expected auto, cpu or cuda"):
        resolve_device("banana")
