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


def write_geneactiv_bin(path: Path, acc_g: np.ndarray, rate: float, start: datetime, *, per_page: int = 300,
                        serial: str = "101774") -> Path:
    """``acc_g`` (n, 3) in g as a GENEActiv .bin: a 59-line text header (sections of ``key:value`` lines,
    calibration ``raw·100 − offset) / gain``), then 10-line pages whose last line holds the samples in hex,
    6 bytes each: x, y, z as 12-bit signed, 10-bit light, button, one spare bit."""
    gain = 25600  # raw counts per g ×100 / gain → 1/256 g per count
    raw = np.round(acc_g * 256).astype(np.int64)
    pages = raw.shape[0] // per_page
    head = [
        "Device Identity", f"Device Unique Serial Code:{serial}", "Device Type:GENEActiv", "Device Model:1.2",
        "Device Firmware Version:Ver06.17 15June23", "Calibration Date:2023-09-07 15:04:34:000", "",
        "Device Capabilities", "Accelerometer Range:-8 to 8", "Accelerometer Resolution:0.0039",
        "Accelerometer Units:g", "Light Meter Range:0 to 20000", "Light Meter Resolution:3 to 48",
        "Light Meter Units:lux", "Temperature Sensor Range:0 to 70", "Temperature Sensor Resolution:0.1",
        "Temperature Sensor Units:deg. C", "",
        "Configuration Info", f"Measurement Frequency:{rate:g} Hz", "Measurement Period:720 Hours",
        f"Start Time:{start:%Y-%m-%d %H:%M:%S}:000", "Time Zone:GMT +00:00", "",
        "Trial Info", "Study Centre:", "Study Code:", "Investigator ID:", "Exercise Type:", "Config Operator ID:",
        "Config Time:2024-01-11 14:07:24:471", "Config Notes:", "Extract Operator ID:",
        "Extract Time:2024-01-31 12:22:13:153", "Extract Notes:", "",
        "Subject Info", "Device Location Code:", "Subject Code:", "Date of Birth:1900-01-01", "Sex:", "Height:",
        "Weight:", "Handedness Code:", "Subject Notes:", "",
        "Calibration Data", f"x gain:{gain}", "x offset:0", f"y gain:{gain}", "y offset:0", f"z gain:{gain}",
        "z offset:0", "Volts:300", "Lux:800", "",
        "Memory Status", f"Number of Pages:{pages}", "",
    ]
    assert len(head) == 59
    lines = list(head)
    for p in range(pages):
        block = raw[p * per_page : (p + 1) * per_page] & 0xFFF
        words = (block[:, 0] << 36) | (block[:, 1] << 24) | (block[:, 2] << 12)
        hexline = "".join(f"{int(w):012X}" for w in words)
        t = start + timedelta(seconds=p * per_page / rate)
        lines += ["Recorded Data", f"Device Unique Serial Code:{serial}", f"Sequence Number:{p}",
                  f"Page Time:{t:%Y-%m-%d %H:%M:%S}:{t.microsecond // 1000:03d}", "Unassigned:", "Temperature:30.0",
                  "Battery voltage:4.0", "Device Status:Recording", f"Measurement Frequency:{rate:.1f}", hexline]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def write_gt3x(path: Path, acc_g: np.ndarray, rate: int, start: datetime, serial: str = "MOS2E12345678") -> Path:
    """``acc_g`` (n, 3) in g as an ActiGraph .gt3x: a zip of ``info.txt`` (``Key: value`` lines) and
    ``log.bin``, records of ``0x1E``, type, UNIX seconds (u32), size (u16), payload, checksum byte. A
    PARAMETERS record (0x15) gives the sample rate (address space 1, id 10) and the acceleration scale
    (space 0, id 55, SSP float: 24-bit significand / 2²³ · 2^exponent), then one ACTIVITY record (0x00)
    per second: y, x, z as 12-bit signed, packed most significant bit first."""
    import zipfile

    scale = 256
    raw = np.round(acc_g * scale).astype(np.int64) & 0xFFF
    epoch = datetime(1970, 1, 1)
    t0 = int((start - epoch).total_seconds())
    ticks = int((start - datetime(1, 1, 1)).total_seconds()) * 10_000_000

    def record(kind: int, seconds: int, payload: bytes) -> bytes:
        head = struct.pack("<BBIH", 0x1E, kind, seconds, len(payload))
        return head + payload + bytes([(~sum(head + payload)) & 0xFF])

    ssp = (9 << 24) | 0x400000  # 0.5 · 2⁹ = 256
    log = record(0x15, t0, struct.pack("<IIII", (55 << 16) | 0, ssp, (10 << 16) | 1, rate))
    for k in range(raw.shape[0] // rate):
        block = raw[k * rate : (k + 1) * rate]
        bits = "".join(f"{int(y):012b}{int(x):012b}{int(z):012b}" for x, y, z in block.tolist())
        bits += "0" * (-len(bits) % 8)
        log += record(0x00, t0 + k, int(bits, 2).to_bytes(len(bits) // 8, "big"))
    info = (f"Serial Number: {serial}\nDevice Type: wGT3XBT\nFirmware: 1.9.2\nBattery Voltage: 4.1\n"
            f"Sample Rate: {rate}\nStart Date: {ticks}\nStop Date: 0\n"
            f"Last Sample Time: {ticks + (raw.shape[0] // rate) * 10_000_000}\nDownload Date: {ticks}\n"
            "Board Revision: 4\nUnexpected Resets: 0\nAcceleration Scale: 256.0\nAcceleration Min: -8.0\n"
            "Acceleration Max: 8.0\nSubject Name: x\nTimeZone: 00:00:00\n")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("info.txt", info)
        z.writestr("log.bin", log)
    return path
