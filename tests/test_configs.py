"""Recipes ship with the package: ``--config NAME``, ``wearspec configs``, and the YAMLs inside a built wheel."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import wearspec
from wearspec.cli import main
from wearspec.config import config_purpose, load_config, resolve_config, shipped_configs
from wearspec.errors import WearspecError

ROOT = Path(__file__).resolve().parents[1]
TOP = sorted((ROOT / "configs").glob("*.yaml"))
RECIPES = {"pretrain": "wearspec.ssl.pretrain:PretrainConfig", "finetune": "wearspec.finetune.recipe:FinetuneConfig",
           "probe": "wearspec.evaluate.probe:ProbeConfig", "demo": "wearspec.demo.recipe:DemoConfig"}


def test_every_top_level_recipe_is_shipped_from_the_one_source():
    """``wearspec/configs`` is the top-level ``configs/`` (a link in the checkout): no copy that could drift."""
    assert (Path(wearspec.__file__).parent / "configs").resolve() == (ROOT / "configs").resolve()
    shipped = shipped_configs()
    assert list(shipped) == [p.stem for p in TOP] and len(TOP) >= 8
    for p in TOP:
        assert shipped[p.stem].read_bytes() == p.read_bytes()


@pytest.mark.parametrize("path", TOP, ids=[p.stem for p in TOP])
def test_every_shipped_recipe_loads_and_states_its_purpose(path):
    import importlib

    module, cls = RECIPES[path.stem.split("_")[0]].split(":")
    load_config(getattr(importlib.import_module(module), cls), path.stem)
    purpose = config_purpose(path)
    assert 20 < len(purpose) <= 100 and not purpose.startswith(("wearspec ", "torchrun ")), purpose


def test_config_by_name_by_readme_path_from_any_folder_and_by_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the README's paths resolve to the shipped recipes
    want = shipped_configs()["pretrain_vit_tiny"]
    for given in ("pretrain_vit_tiny", "pretrain_vit_tiny.yaml", "configs/pretrain_vit_tiny.yaml"):
        assert resolve_config(given) == want
    mine = tmp_path / "configs" / "pretrain_vit_tiny.yaml"  # a file of the user's own wins over the shipped one
    mine.parent.mkdir()
    mine.write_text("optim:\n  epochs: 3\n")
    assert resolve_config("configs/pretrain_vit_tiny.yaml") == Path("configs/pretrain_vit_tiny.yaml")
    for bad in ("nope", "elsewhere/pretrain_vit_tiny.yaml", "nope.yaml"):
        with pytest.raises(WearspecError, match=r"config file not found; .*pretrain_vit_tiny.*wearspec configs"):
            resolve_config(bad)


def test_configs_command_lists_and_prints(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [p.stem for p in TOP]
    probe = next(line for line in lines if line.startswith("probe "))
    assert probe.split(None, 1)[1] == config_purpose(ROOT / "configs" / "probe.yaml")
    assert main(["configs", "probe"]) == 0
    assert capsys.readouterr().out == (ROOT / "configs" / "probe.yaml").read_text()
    assert main(["pretrain", "--config", "pretrain_vit_tiny", "--print-config", "store=s"]) == 0
    assert "store: s" in capsys.readouterr().out
    assert main(["probe", "--config", "nope", "--print-config"]) == 2
    assert "nope: config file not found" in capsys.readouterr().err


def _source_copy(dest: Path) -> Path:
    """The files a wheel is built from (the link kept as a link), outside the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "configs", dest / "configs")
    shutil.copytree(ROOT / "wearspec", dest / "wearspec", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _wheel(tmp_path: Path) -> Path:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: cannot build a wheel without the network")
    src = _source_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path)
    (whl,) = (tmp_path / "dist").glob("wearspec-*.whl")
    return whl


def test_the_wheel_holds_the_recipes_and_the_resolver_finds_them_there(tmp_path):
    whl = _wheel(tmp_path)
    with zipfile.ZipFile(whl) as z:
        for p in TOP:
            assert z.read(f"wearspec/configs/{p.name}") == p.read_bytes()
        z.extractall(tmp_path / "site")
    assert not (tmp_path / "site" / "wearspec" / "configs").is_symlink()
    code = ("import wearspec, sys; from wearspec.config import resolve_config, shipped_configs; "
            "assert wearspec.__file__.startswith(sys.argv[1]), wearspec.__file__; "
            "print(resolve_config('configs/pretrain_vit_tiny.yaml')); print(len(shipped_configs()))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    path, count = run.stdout.split()
    assert Path(path) == tmp_path / "site" / "wearspec" / "configs" / "pretrain_vit_tiny.yaml"
    assert int(count) == len(TOP)


@pytest.mark.slow
def test_a_fresh_venv_with_the_wheel_runs_the_readme_commands(tmp_path):
    """pip install of the wheel into a new venv (its dependencies borrowed from this one through a .pth file, so
    no network is needed), then the README's ``--config configs/….yaml`` from a folder without a clone."""
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("torch is missing")
    whl = _wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(whl)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    listing = subprocess.run([str(venv / "bin" / "wearspec"), "configs"], cwd=work, env=env, capture_output=True,
                             text=True)
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[0] for line in listing.stdout.splitlines()] == [p.stem for p in TOP]
    run = subprocess.run([str(venv / "bin" / "wearspec"), "pretrain", "--config", "configs/pretrain_vit_tiny.yaml",
                          "--print-config", "store=s"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "store: s" in run.stdout, run.stderr
    where = subprocess.run([str(py), "-c", "import wearspec; print(wearspec.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True).stdout
    assert where.startswith(str(venv)), where
