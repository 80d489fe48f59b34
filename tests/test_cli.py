"""The `wearspec` command: prepare/inspect end to end, one-line errors, non-zero exits."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wearspec.cli import main
from wearspec.data.store import WindowStore

TINY = ["synthetic.subjects=3", "synthetic.minutes_per_subject=1"]


def test_prepare_synthetic_then_inspect(tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["prepare", "synthetic", "-o", str(out), *TINY]) == 0
    text = capsys.readouterr().out
    assert "windows" in text and "acc_x" in text
    st = WindowStore(out)
    assert st.channels[:3] == ["acc_x", "acc_y", "acc_z"] and len(st.subject_names) == 3
    # same inputs and settings again: nothing to do
    assert main(["prepare", "synthetic", "-o", str(out), *TINY]) == 0
    assert "up to date" in capsys.readouterr().out
    # a different store into the same folder is refused, the old one is kept
    assert main(["prepare", "synthetic", "-o", str(out), *TINY, "synthetic.seed=7"]) == 2
    assert "already holds a different store" in capsys.readouterr().err
    assert len(WindowStore(out)) == len(st)
    png = tmp_path / "grid.png"
    assert main(["inspect", str(out), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "spectrogram grid" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json", "--no-png"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["windows"] == len(st) and set(summary["per_subject"]) == set(st.subject_names)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["prepare", "synthetic", "-o", "{tmp}/x", "window.rate=-1"], "window.rate: expected a positive rate"),
        (["prepare", "synthetic", "-o", "{tmp}/x", "windw.rate=5"], "unknown config key windw"),
        (["prepare", "generic", "{tmp}/missing.csv", "-o", "{tmp}/x"], "missing.csv: input not found"),
        (["prepare", "pamap2", "-o", "{tmp}/x"], "an input path is required"),
        (["inspect", "{tmp}"], "not a window store"),
        (["prepare", "synthetic", "-o", "{tmp}/x", "--config", "{tmp}/none.yaml"], "none.yaml: config file not found"),
    ],
)
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("wearspec: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_console_script_and_stdlib_ssl(tmp_path):
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", "import ssl, wearspec; print(ssl.__file__)"], cwd=os.getcwd(),
                       capture_output=True, text=True, env=env, check=True)
    assert "wearspec" not in r.stdout and r.stdout.strip().endswith("ssl.py")
    r = subprocess.run([sys.executable, "-m", "wearspec", "prepare", "synthetic", "-o", str(tmp_path / "s"),
                        "synthetic.subjects=0"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.startswith("wearspec: error: synthetic.subjects")


def test_print_config_roundtrips(tmp_path, capsys):
    assert main(["prepare", "synthetic", "-o", str(tmp_path / "s"), "--print-config", "window.rate=25"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "c.yaml").write_text(text)
    assert main(["prepare", "synthetic", "-o", str(tmp_path / "s"), "--config", str(tmp_path / "c.yaml"),
                 *TINY]) == 0
    assert WindowStore(tmp_path / "s").rate == 25.0
    assert not np.isnan(WindowStore(tmp_path / "s").read(0)).any()
