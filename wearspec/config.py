"""Typed configs: dataclasses, YAML files and ``a.b=c`` command-line overrides.

Every recipe has a dataclass config. :func:`load_config` builds it from defaults, then a YAML file,
then overrides, checking every key and type on the way: an unknown key or a wrong type is a
:class:`~wearspec.errors.WearspecError` that names the key (and the file). The resolved config is
saved with every run (:func:`to_yaml`).

Override values are parsed as YAML scalars: ``window.rate=50``, ``window.nan_policy=drop``,
``generic.channels=[ax,ay,az]``, ``store.overwrite=true``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from wearspec.errors import WearspecError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is type(None):
        return "null"
    if tp in (int, float):
        return "an integer" if tp is int else "a number"
    if typing.get_origin(tp) is typing.Literal:
        return " or ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted where lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except WearspecError as e:
                errors.append(str(e))
        raise WearspecError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise WearspecError(f"{key}: expected one of {', '.join(map(str, typing.get_args(tp)))}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise WearspecError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise WearspecError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise WearspecError(f"{key}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise WearspecError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or float(value) != int(value)):
            raise WearspecError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WearspecError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # every setting is a finite quantity; nan and inf would pass range checks
            raise WearspecError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise WearspecError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise WearspecError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def check_range(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, none_ok: bool = False, note: str = "") -> None:
    """Refuse a numeric setting outside ``[low, high]`` (``(`` / ``)`` with ``low_open`` / ``high_open``; a bound
    of None is unbounded) or not finite, naming ``key``: ``'optim.lr: expected a number > 0, got -1.0'``. ``None``
    passes when ``none_ok``; ``note`` adds what a special value means, e.g. ``'0 = off'``."""
    if value is None and none_ok:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    def num(b: float) -> str:
        return str(int(b)) if float(b).is_integer() else f"{b:g}"

    if low is not None and high is not None:
        want = f"a number in {'(' if low_open else '['}{num(low)}, {num(high)}{')' if high_open else ']'}"
    elif low is not None:
        want = f"a number {'>' if low_open else '≥'} {num(low)}"
    elif high is not None:
        want = f"a number {'<' if high_open else '≤'} {num(high)}"
    else:
        want = "a finite number"
    extra = f" ({note})" if note else ""
    raise WearspecError(f"{key}: expected {want}{' or null' if none_ok else ''}{extra}, got {value!r}")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) mapping; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise WearspecError(
            f"unknown config key {prefix}{unknown[0]} (known keys in this section: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict (recursively), for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b=c'`` → (['a', 'b'], parsed value)."""
    if "=" not in text:
        raise WearspecError(f"override {text!r}: expected key=value (e.g. window.rate=50)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise WearspecError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _merge(base: dict, parts: list[str], value: Any) -> None:
    node = base
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = node[p] = {} if nxt is None else nxt
            if not isinstance(nxt, dict):
                raise WearspecError(f"override {'.'.join(parts)}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def _deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise WearspecError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f", line {mark.line + 1}" if mark is not None else ""
        raise WearspecError(f"{path}{pos}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WearspecError(f"{path}: expected a mapping of config keys at the top level")
    return data


def shipped_configs() -> dict[str, Path]:
    """The recipes that ship inside the package, ``wearspec/configs/*.yaml``: ``{name (no .yaml): file}``.

    In a checkout ``wearspec/configs`` is a link to the top-level ``configs/`` (the one source, edited there);
    a wheel holds copies (package data), so an installed wearspec has its recipes without a clone."""
    from importlib.resources import files

    folder = Path(str(files("wearspec") / "configs"))
    if not folder.is_dir():
        return {}
    return {f.name[: -len(".yaml")]: f for f in sorted(folder.glob("*.yaml"))}


def config_purpose(path: str | os.PathLike, width: int = 100) -> str:
    """A recipe's one-line purpose: the first sentence of its leading comment (command examples, lines that start
    with ``wearspec`` or ``torchrun``, are skipped), cut to ``width`` characters at a word."""
    words: list[str] = []
    for line in Path(path).read_text().splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or (not text and words):
            break
        if text and not text.startswith(("wearspec ", "torchrun ")):
            words.append(text)
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z`])", " ".join(words))[0]
    return first if len(first) <= width else first[: width - 1].rsplit(" ", 1)[0] + " …"


def resolve_config(path: str | os.PathLike) -> Path:
    """``--config``: a file that exists is itself; otherwise a shipped recipe by name, given as ``NAME``,
    ``NAME.yaml`` or ``configs/NAME.yaml`` (the README's paths then work from any folder, and after a ``pip
    install`` without a clone)."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_configs()
    name = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    if name in shipped and p.parent in (Path("."), Path("configs")):
        return shipped[name]
    raise WearspecError(f"{p}: config file not found; expected a YAML file or a shipped recipe by name "
                        f"({', '.join(shipped) or 'none shipped'}; `wearspec configs` lists them)")


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults ← YAML file (a path or a shipped recipe's name: :func:`resolve_config`) ← overrides, validated.
    Errors name the file or the override."""
    data = to_dict(cls())
    if path is not None:
        path = resolve_config(path)
        file_data = load_yaml(path)
        try:
            from_dict(cls, _deep_update(to_dict(cls()), file_data))
        except WearspecError as e:
            raise WearspecError(f"{path}: {e}") from None
        _deep_update(data, file_data)
    for o in overrides:
        parts, value = parse_override(o)
        _merge(data, parts, value)
    return from_dict(cls, data)


def first_difference(a: Any, b: Any, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str] | None:
    """Where two config dicts first differ: (the key path, ``"key.sub: OLD before, NEW now"`` or ``"key is only
    in the new/saved settings"``); None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            where = path + (str(k),)
            if k not in a or k not in b:
                return where, f"{'.'.join(where)} is only in the {'new' if k in b else 'saved'} settings"
            d = first_difference(a[k], b[k], where)
            if d is not None:
                return d
        return None
    return None if a == b else (path, f"{'.'.join(path)}: {a!r} before, {b!r} now")


def saved_config_difference(saved: str | os.PathLike, config: dict, ignore: Sequence[str] = ()
                            ) -> tuple[str, str] | None:
    """Compare a run folder's saved ``config.yaml`` with the ``config`` dict of a run about to resume in it:
    (the first differing top-level key, :func:`first_difference`'s message) or None (no saved file, or the same
    settings). Top-level keys in ``ignore`` (e.g. ``runtime``) may differ."""
    saved = Path(saved)
    if not saved.is_file():
        return None
    old = {k: v for k, v in (yaml.safe_load(saved.read_text()) or {}).items() if k not in ignore}
    diff = first_difference(old, {k: v for k, v in config.items() if k not in ignore})
    return (diff[0][0], diff[1]) if diff is not None else None
