"""Numeric building blocks of the synthetic generators: unit quaternions and band-limited noise.

Quaternions are ``(w, x, y, z)`` arrays ``(..., 4)``; an orientation maps device → world. Shared by the
daily-activity simulation (:mod:`wearspec.data.synthetic`) and the exercise one
(:mod:`wearspec.data.synthetic_exercise`) so that both agree on conventions.
"""

from __future__ import annotations

import numpy as np


def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` of quaternion arrays (..., 4) (broadcast)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
         aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def qconj(q: np.ndarray) -> np.ndarray:
    """Conjugate (the inverse of a unit quaternion)."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qexp(v: np.ndarray) -> np.ndarray:
    """Rotation vector (..., 3) (axis × angle, rad) → unit quaternion (..., 4)."""
    ang = np.linalg.norm(v, axis=-1, keepdims=True)
    s = np.where(ang > 1e-12, np.sin(0.5 * ang) / np.maximum(ang, 1e-12), 0.5)
    return np.concatenate([np.cos(0.5 * ang), v * s], axis=-1)


def qlog(q: np.ndarray) -> np.ndarray:
    """Unit quaternion → rotation vector (angle ≤ π when w ≥ 0, up to 2π otherwise)."""
    n = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    ang = 2.0 * np.arctan2(n, q[..., :1])
    return q[..., 1:] * np.where(n > 1e-12, ang / np.maximum(n, 1e-12), 2.0)


def continuous(q: np.ndarray) -> np.ndarray:
    """(n, 4) quaternions with signs chosen so that the track has no jumps and starts with w ≥ 0."""
    flips = np.einsum("ij,ij->i", q[1:], q[:-1]) < 0
    sign = np.cumprod(np.concatenate([[-1.0 if q[0, 0] < 0 else 1.0], np.where(flips, -1.0, 1.0)]))
    return q * sign[:, None]


def qrotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v (..., 3) by q (device → world when q is an orientation)."""
    w, u = q[..., :1], q[..., 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def axis_rotation(i: int, angle) -> np.ndarray:
    """Quaternions (..., 4) of rotations by ``angle`` (rad, array or scalar) about coordinate axis ``i``."""
    v = np.zeros(np.shape(angle) + (3,))
    v[..., i] = angle
    return qexp(v)


def band_noise(rng: np.random.Generator, n: int, rate: float, lo: float, hi: float, dims: int = 1) -> np.ndarray:
    """(n, dims) Gaussian noise band-limited to [lo, hi] Hz (FFT mask), unit RMS (zeros if no bin fits)."""
    spec = rng.standard_normal((dims, n // 2 + 1)) + 1j * rng.standard_normal((dims, n // 2 + 1))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    spec *= (f >= lo) & (f <= min(hi, 0.45 * rate))
    x = np.fft.irfft(spec, n=n, axis=-1).T
    rms = np.sqrt((x**2).mean(axis=0, keepdims=True))
    return np.where(rms > 0, x / np.maximum(rms, 1e-30), 0.0)
