"""Gravity autocalibration recovers a known gain and offset; non-wear finds an injected still block."""

from __future__ import annotations

import numpy as np

from wearspec.data.preprocess import calibrate_gravity, nonwear_periods

RATE = 10.0


def _still_and_moving(rng, true_offset, true_scale, n_still=60, still_s=20, move_s=20):
    """Still stretches in random orientations (as a miscalibrated device measures them) between moves."""
    parts = []
    for _ in range(n_still):
        g = rng.normal(size=3)
        g /= np.linalg.norm(g)
        measured = g / true_scale - true_offset  # calibrated = (measured + offset) · scale = g
        parts.append(measured + rng.normal(scale=0.002, size=(int(still_s * RATE), 3)))
        parts.append(rng.normal(scale=0.5, size=(int(move_s * RATE), 3)))
    return np.concatenate(parts).astype(np.float32)


def test_calibration_recovers_known_gain_and_offset():
    rng = np.random.default_rng(0)
    offset, scale = np.array([0.03, -0.05, 0.02]), np.array([1.02, 0.97, 1.01])
    acc = _still_and_moving(rng, offset, scale)
    out, info = calibrate_gravity(acc, RATE)
    assert info["applied"] and info["still_points"] >= 60
    np.testing.assert_allclose(info["offset_g"], offset, atol=2e-3)
    np.testing.assert_allclose(info["scale"], scale, atol=2e-3)
    assert info["error_after_g"] < 0.1 * info["error_before_g"]
    assert out.dtype == np.float32 and out.shape == acc.shape


def test_calibration_skipped_without_coverage():
    rng = np.random.default_rng(1)
    acc = np.tile([0.0, 0.0, 1.0], (int(600 * RATE), 1)) + rng.normal(scale=0.002, size=(int(600 * RATE), 3))
    out, info = calibrate_gravity(acc.astype(np.float32), RATE)
    assert not info["applied"] and "cover" in info["reason"] and out is not None


def test_nonwear_finds_injected_still_block():
    rng = np.random.default_rng(2)
    n = int(4 * 3600 * RATE)
    acc = rng.normal(scale=0.2, size=(n, 3)) + [0, 0, 1]
    a, b = int(3600 * RATE), int(2.5 * 3600 * RATE)  # 90 min on the table
    acc[a:b] = [0.01, -0.02, 0.99] + rng.normal(scale=0.002, size=(b - a, 3))
    periods = nonwear_periods(acc, RATE)
    assert periods == [(a, b)]
    assert nonwear_periods(rng.normal(scale=0.2, size=(n, 3)), RATE) == []
