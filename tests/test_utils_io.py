"""Atomic writes: the result appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from wearspec.utils.io import _UMASK, atomic_path, write_text


def test_atomic_file_gets_umask_permissions_not_private(tmp_path):
    write_text(tmp_path / "a.txt", "hello")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == 0o666 & ~_UMASK == stat.S_IMODE(plain.stat().st_mode)


def test_atomic_dir_gets_umask_permissions(tmp_path):
    with atomic_path(tmp_path / "d", is_dir=True) as tmp:
        (tmp / "f").write_text("x")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~_UMASK


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_atomic_write_takes_any_buffer_and_leaves_no_temp(tmp_path):
    from wearspec.utils.io import atomic_write

    atomic_write(tmp_path / "m.engine", bytearray(b"abc"))
    atomic_write(tmp_path / "m.engine", memoryview(b"xyz"))
    assert (tmp_path / "m.engine").read_bytes() == b"xyz" and os.listdir(tmp_path) == ["m.engine"]
    assert stat.S_IMODE((tmp_path / "m.engine").stat().st_mode) == 0o666 & ~_UMASK
