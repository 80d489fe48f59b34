"""Accelerometer preprocessing for raw device recordings: gravity autocalibration and non-wear detection.

Both work on (n, 3) accelerations in g at a uniform rate, cost O(n), and report what they did as a
small dict that goes into the store manifest.

* :func:`calibrate_gravity` — the sphere fit of van Hees et al. (2014, J Appl Physiol 117:738), as
  in GGIR and actipy: when the device is still, the measured vector should have length 1 g; the means
  of still stretches (every axis' SD below ``still_sd_g``) are fitted, per axis, to
  ``x' = (x + offset) · scale`` so that they lie on the unit sphere (iteratively re-weighted: each
  step regresses the closest points on the sphere on the measurements). Skipped, and said so, when the
  still points do not cover the sphere (each axis must see more than ±0.3 g) or the fit does not lower
  the error.
* :func:`nonwear_periods` — van Hees et al. (2011, PLoS ONE 6:e22922): a window of
  ``window_s`` (default 60 min, moved by a quarter) is non-wear when at least 2 of the 3 axes have an
  SD below ``sd_g`` or a range below ``range_g``. Consecutive flagged windows merge into periods.
"""

from __future__ import annotations

import numpy as np

STILL_WINDOW_S = 10.0  # length of the stretches whose means are fitted
STILL_SD_G = 0.013  # an axis is still below this SD (g)
MIN_STILL_POINTS = 10


def _block_stats(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per consecutive ``block`` samples of (n, 3) ``x`` (the tail dropped): count, sum, sum of squares,
    min and max per axis — (m,), (m, 3) ×4 — in float64."""
    m = x.shape[0] // block
    b = np.asarray(x[: m * block], dtype=np.float64).reshape(m, block, x.shape[1])
    return np.full(m, block), b.sum(axis=1), (b * b).sum(axis=1), b.min(axis=1), b.max(axis=1)


def still_means(acc: np.ndarray, rate: float, sd_g: float = STILL_SD_G) -> np.ndarray:
    """Means (m, 3) of the ``STILL_WINDOW_S`` stretches in which every axis' SD is below ``sd_g``."""
    block = max(2, int(round(STILL_WINDOW_S * rate)))
    n, s, ss, _, _ = _block_stats(acc, block)
    if not len(n):
        return np.zeros((0, 3))
    mean = s / block
    sd = np.sqrt(np.maximum(ss / block - mean * mean, 0.0))
    still = (sd < sd_g).all(axis=1) & np.isfinite(mean).all(axis=1)
    return mean[still]


def fit_sphere(points: np.ndarray, iterations: int = 1000, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis offset (3,) and scale (3,) with ``(points + offset) · scale`` on the unit sphere."""
    offset, scale = np.zeros(3), np.ones(3)
    last = np.inf
    for _ in range(iterations):
        cur = (points + offset) * scale
        closest = cur / np.linalg.norm(cur, axis=1, keepdims=True)
        err = float(np.mean(np.linalg.norm(cur - closest, axis=1)))
        for k in range(3):  # closest_k ≈ b·x_k + a  ⇒  scale b, offset a / b
            b, a = np.polyfit(points[:, k], closest[:, k], 1)
            scale[k], offset[k] = b, a / b
        if abs(last - err) < tol:
            break
        last = err
    return offset, scale


def sphere_error(points: np.ndarray) -> float:
    """Mean distance (g) of still points from the unit sphere."""
    return float(np.mean(np.abs(np.linalg.norm(points, axis=1) - 1.0))) if len(points) else float("nan")


def calibrate_gravity(acc: np.ndarray, rate: float, sd_g: float = STILL_SD_G) -> tuple[np.ndarray, dict]:
    """Calibrated (n, 3) accelerations (float32) and what was done (offsets, scales, errors before and after,
    number of still points), or the input unchanged with the reason it was skipped."""
    points = still_means(acc, rate, sd_g)
    info: dict = {"method": "sphere fit on still periods (van Hees 2014)", "still_points": int(len(points)),
                  "error_before_g": sphere_error(points)}
    if len(points) < MIN_STILL_POINTS or not ((points.max(axis=0) > 0.3) & (points.min(axis=0) < -0.3)).all():
        info["applied"] = False
        info["reason"] = "too few still periods, or they do not cover every axis in both directions (±0.3 g)"
        return acc, info
    offset, scale = fit_sphere(points)
    after = sphere_error((points + offset) * scale)
    info.update(offset_g=offset.round(6).tolist(), scale=scale.round(6).tolist(), error_after_g=after)
    if not after < info["error_before_g"]:
        info["applied"] = False
        info["reason"] = "the fit did not lower the error"
        return acc, info
    info["applied"] = True
    return ((acc + offset) * scale).astype(np.float32), info


def nonwear_periods(acc: np.ndarray, rate: float, window_s: float = 3600.0, sd_g: float = 0.013,
                    range_g: float = 0.05) -> list[tuple[int, int]]:
    """Non-wear sample ranges ``(begin, end)`` of (n, 3) ``acc``: windows of ``window_s`` moved by a quarter
    of that, flagged when ≥ 2 axes have SD < ``sd_g`` or range < ``range_g``, merged."""
    step = max(1, int(round(window_s * rate / 4)))
    n_blocks = 4  # a window is 4 steps
    cnt, s, ss, lo, hi = _block_stats(acc, step)
    m = len(cnt) - n_blocks + 1
    if m < 1:
        return []
    csum = lambda a: np.concatenate([np.zeros((1,) + a.shape[1:]), np.cumsum(a, axis=0)])  # noqa: E731
    S, SS = csum(s), csum(ss)
    n = step * n_blocks
    mean = (S[n_blocks:] - S[:-n_blocks]) / n
    sd = np.sqrt(np.maximum((SS[n_blocks:] - SS[:-n_blocks]) / n - mean * mean, 0.0))
    win_lo = np.min(np.stack([lo[k : k + m] for k in range(n_blocks)]), axis=0)
    win_hi = np.max(np.stack([hi[k : k + m] for k in range(n_blocks)]), axis=0)
    flagged = ((sd < sd_g).sum(axis=1) >= 2) | (((win_hi - win_lo) < range_g).sum(axis=1) >= 2)
    periods: list[tuple[int, int]] = []
    for w in np.flatnonzero(flagged).tolist():
        a, b = w * step, (w + n_blocks) * step
        if periods and a <= periods[-1][1]:
            periods[-1] = (periods[-1][0], b)
        else:
            periods.append((a, b))
    return periods
