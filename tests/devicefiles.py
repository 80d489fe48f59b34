"""Small device files written from the public format descriptions, for the device-reader tests.

Axivity .cwa (OpenMovement ``ax3-technical.md``): a 1024-byte ``MD`` header, then 512-byte ``AX``
sectors, each with a packed wall-clock timestamp, a rate byte (``3200 / 2**(15 - (b & 15))`` Hz), the
axis count and packing, ``sampleCount`` samples as little-endian int16 (AX3: x, y, z in 1/256 g; AX6:
gx, gy, gz then ax, ay, az, scales in the light word) and a checksum that makes the 16-bit word sum 0.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

RATE_CODES = {25.0: 8, 50.0: 9, 100.0: 10, 200.0: 11}


def _packed_time(t: datetime) -> int:
    return ((t.year - 2000) << 26) | (t.month << 22) | (t.day << 17) | (t.hour << 12) | (t.minute << 6) | t.second


def _header(hardware: int, device_id: int, rate_byte: int, start: datetime) -> bytes:
    h = bytearray(1024)
    struct.pack_into("<2sHBHIH", h, 0, b"MD", 1020, hardware, device_id & 0xFFFF, 7, device_id >> 16)
    struct.pack_into("<II", h, 13, _packed_time(start), _packed_time(start + timedelta(days=1)))
    h[36] = rate_byte
    h[41] = 48  # firmware revision
    struct.pack_into("<h", h, 42, 60)  # time zone, minutes
    return bytes(h)


def _sector(seq: int, start: datetime, rate: float, rate_byte: int, samples: np.ndarray, gyro: bool) -> bytes:
    """One data sector whose first sample is at ``start`` (whole seconds + a fraction)."""
    s = bytearray(512)
    whole = start.replace(microsecond=0)
    frac = int(round(start.microsecond / 1e6 * 65536)) >> 1  # 1/32768 s units in the low 15 bits
    shift = (frac << 1) * int(rate) >> 16  # the sample the whole-second timestamp belongs to
    offset = -shift if frac else 0
    light = (3 << 13) | (5 << 10) if gyro else 0  # AX6: accel 1/2048 g, gyro 250 dps range
    axes = 0x62 if gyro else 0x32
    struct.pack_into("<2sHHII I HHBBBBhH", s, 0, b"AX", 508, 0x8000 | frac, 7, seq, _packed_time(whole),
                     light, 300, 0, 190, rate_byte, axes, offset, samples.shape[0])
    s[30 : 30 + samples.size * 2] = samples.astype("<i2").tobytes()
    words = np.frombuffer(bytes(s), "<u2")
    struct.pack_into("<H", s, 510, (-int(words.sum())) & 0xFFFF)
    return bytes(s)


def write_cwa(path: Path, acc_g: np.ndarray, rate: float, start: datetime, *, gyro_dps: np.ndarray | None = None,
              device_id: int = 12345, gap_after: int | None = None, gap_s: float = 0.0) -> Path:
    """``acc_g`` (n, 3) in g (and ``gyro_dps`` (n, 3) for an AX6) as a .cwa file; optionally a recording
    gap of ``gap_s`` seconds after sector ``gap_after``."""
    gyro = gyro_dps is not None
    per = 40 if gyro else 80
    code = RATE_CODES[rate]
    rate_byte = code | (1 << 6)  # ±8 g
    raw = np.round(acc_g * (2048 if gyro else 256)).astype(np.int64)
    if gyro:
        raw = np.concatenate([np.round(gyro_dps * 32768 / 250).astype(np.int64), raw], axis=1)
    out = bytearray(_header(0x64 if gyro else 0x00, device_id, rate_byte, start))
    t = start
    for k, a in enumerate(range(0, raw.shape[0] - per + 1, per)):
        out += _sector(k, t, rate, rate_byte, raw[a : a + per], gyro)
        t += timedelta(seconds=per / rate)
        if gap_after is not None and k == gap_after:
            t += timedelta(seconds=gap_s)
    path.write_bytes(bytes(out))
    return path
