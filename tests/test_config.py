import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from wearspec.config import (first_difference, load_config, parse_override, saved_config_difference,
                             to_yaml)
from wearspec.data.prepare import PrepareConfig
from wearspec.errors import WearspecError


def test_defaults_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("window:\n  rate: 100\n  length_s: 2\nstore:\n  dtype: float16\n")
    cfg = load_config(PrepareConfig, f, ["window.hop_s=0.5", "generic.channels=[ax, ay]", "generic.rate=null"])
    assert cfg.window.rate == 100.0 and cfg.window.length_s == 2.0 and cfg.window.hop_s == 0.5
    assert cfg.store.dtype == "float16" and cfg.generic.channels == ["ax", "ay"] and cfg.generic.rate is None
    again = tmp_path / "again.yaml"
    again.write_text(to_yaml(cfg))
    assert load_config(PrepareConfig, again) == cfg


@pytest.mark.parametrize(
    "override,message",
    [
        ("window.rat=5", "unknown config key window.rat"),
        ("nosuch.key=1", "unknown config key nosuch"),
        ("window.rate=fast", "window.rate: expected a number, got 'fast'"),
        ("store.shard_windows=1.5", "store.shard_windows: expected an integer"),
        ("store.overwrite=maybe", "store.overwrite: expected true or false"),
        ("generic.channels=ax", "generic.channels: expected a list"),
        ("window.nan_policy=keep", "window.nan_policy: expected one of"),
        ("store.dtype=int8", "store.dtype: expected float16 or float32"),
        ("window", "expected key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(WearspecError, match=message):
        load_config(PrepareConfig, None, [override])


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("window:\n  rate: [1,\n")
    with pytest.raises(WearspecError, match=r"bad.yaml, line \d+: invalid YAML"):
        load_config(PrepareConfig, f)
    f.write_text("window:\n  rte: 5\n")
    with pytest.raises(WearspecError, match=r"bad.yaml: unknown config key window.rte"):
        load_config(PrepareConfig, f)
    f.write_text("- a\n- b\n")
    with pytest.raises(WearspecError, match="expected a mapping"):
        load_config(PrepareConfig, f)
    with pytest.raises(WearspecError, match="config file not found"):
        load_config(PrepareConfig, tmp_path / "missing.yaml")


def test_parse_override_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=x=y") == (["a"], "x=y")
    assert parse_override("a=") == (["a"], "")


def test_nested_dataclass_types():
    @dataclass
    class Inner:
        k: int = 1

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner)
        names: list[str] = field(default_factory=list)

    cfg = load_config(Outer, None, ["inner.k=4", "names=[a, b]"])
    assert cfg.inner.k == 4 and cfg.names == ["a", "b"]
    with pytest.raises(WearspecError, match=r"inner: expected a section"):
        load_config(Outer, None, ["inner=3"])


def test_float_written_in_exponent_form():
    from dataclasses import dataclass as dc

    @dc
    class C:
        lr: float = 0.1
        lrs: list[float] = field(default_factory=list)

    cfg = load_config(C, None, ["lr=1e-3", "lrs=[1e-3, 0.01]"])
    assert cfg.lr == 1e-3 and cfg.lrs == [1e-3, 0.01]
    with pytest.raises(WearspecError, match="lr: expected a number, got 'fast'"):
        load_config(C, None, ["lr=fast"])


def test_first_difference_names_the_key():
    assert first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 2}}) is None
    assert first_difference({"a": {"b": 1}}, {"a": {"b": 2}}) == (("a", "b"), "a.b: 1 before, 2 now")
    assert "a.z is only in the new" in first_difference({"a": {}}, {"a": {"z": 1}})[1]


def test_saved_config_difference(tmp_path):
    saved = tmp_path / "config.yaml"
    assert saved_config_difference(saved, {"a": 1}) is None  # nothing saved yet
    saved.write_text("a: {b: 1}\nruntime: {threads: 1}\n")
    assert saved_config_difference(saved, {"a": {"b": 1}, "runtime": {"threads": 2}}, ignore=("runtime",)) is None
    assert saved_config_difference(saved, {"a": {"b": 2}, "runtime": {"threads": 1}}) == ("a", "a.b: 1 before, 2 now")
    assert saved_config_difference(saved, {"a": {"b": 1}}) == ("runtime", "runtime is only in the saved settings")


def test_loader_imports_nothing_from_data():
    """config.py is only the generic loader (no arrow back up to wearspec.data); the prepare settings live in
    their own modules (data.prepare, data.store, data.readers.config)."""
    code = ("import sys, wearspec.config as c; assert not [m for m in sys.modules if m.startswith('wearspec.data')], "
            "sorted(m for m in sys.modules if m.startswith('wearspec.'))")
    subprocess.run([sys.executable, "-c", code], check=True)
    import wearspec.config as c

    for name in ("PrepareConfig", "GenericConfig", "SyntheticConfig", "StoreConfig"):
        assert not hasattr(c, name), name
