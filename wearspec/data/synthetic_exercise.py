"""Repetitive upper-body exercises for the synthetic generator (``synthetic.activities=[exercise]``).

The counterpart of the daily-activity set in :mod:`wearspec.data.synthetic`, built to need the
opposite invariances. There the sensor's mounting rotation is a nuisance; here the classes differ in
*fine arm motion within a couple of seconds*: the plane the wrist moves in (the rotation axis, seen
in the device frame by the gyroscope), where the forearm points while it moves (gravity's path in
the device frame), how far it travels (range of motion, pendulum radius) and the shape of each
repetition (lift, hold, lower: its harmonics). A full 3-D rotation augmentation erases the first two,
so a recipe tuned on the daily set (where it helps) should not be expected to suit this one.

Exercises (right wrist; heading frame x forward, y left, z up; forearm pitch + up, roll about the
forearm as in the daily set):

* ``curl``: elbow flexion from a hanging forearm, 110–140° about the lateral axis, forearm radius,
  supinating a little while it lifts;
* ``front_raise``: straight arm raised forward to about horizontal (75–100°, the lateral axis, arm
  radius), thumb up;
* ``lateral_raise``: straight arm raised sideways (70–95° about the forward axis, arm radius), palm
  towards the body: same range and radius as the front raise, another plane;
* ``shoulder_press``: forearm upright, the wrist pushed up 0.3–0.45 m with a small elbow flare;
* ``tricep_extension``: overhead, the forearm lowers from vertical to behind the head and back
  (90–125° about the lateral axis, forearm radius): the curl's axis, another gravity path; at rest
  between repetitions the forearm is upright, as in the press;
* ``row``: seated cable row, forearm forward and level, the wrist pulled back 0.25–0.4 m while
  the forearm turns 20–35° about the vertical;
* ``rest``: between sets, the daily set's ``standing`` (sway, fidgets, hand activity).

A repetition is a smooth lift (a quintic ramp, so the acceleration is continuous), a hold, a lower
and a pause; its phase advances at the tempo (0.25–0.45 reps/s before the subject's factor) with a
slow ±5 % drift, ±4 % repetition-to-repetition range of motion and up to 15 % fatigue (the range
shrinks over the set); a set starts and ends with 0–3 s of holding the start pose (those windows keep
the exercise's label, as a real annotation would). Each subject has a tempo factor (0.75–1.3), a
range-of-motion factor (0.75–1.1), a lifting style (share of the repetition spent lifting and
holding), a grip of their own for each exercise (pose offsets: pitch SD 10°, roll about the forearm
SD 30°) and a modest sensor mounting rotation (random axis, 0–25°), which also applies to the
subject's rest bouts. Gravity, the gyroscope (from the quaternion track) and the sensor
model (scale, bias walk, noise) are the daily set's, in :func:`wearspec.data.synthetic.simulate_subject`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wearspec.data.kinematics import axis_rotation, band_noise, qexp, qmul, qrotate

EXERCISE_ACTIVITIES = ("curl", "front_raise", "lateral_raise", "shoulder_press", "tricep_extension", "row", "rest")
REST_AS = "standing"  # the daily profile a rest bout is simulated with
MOUNT_MAX_DEG = 25.0  # the exercise subjects' mounting rotation: random axis, angle uniform in [0, this]
TEMPO_SCALE = (0.75, 1.3)  # per-subject tempo factor
ROM_SCALE = (0.75, 1.1)  # per-subject range-of-motion factor
GRIP_SD_DEG = (10.0, 30.0)  # per-subject, per-exercise offset of the pose: pitch, roll about the forearm
IDLE_S = (0.0, 3.0)  # holding the start pose at each end of a set, s
FATIGUE = 0.15  # the range of motion shrinks by up to this fraction over a set


@dataclass(frozen=True)
class Exercise:
    """One exercise. ``pitch``/``roll``: (mean, sd) deg of the starting forearm pose; ``axis``: the
    rotation axis in the heading frame (x forward, y left, z up); ``rom``: (lo, hi) range of motion,
    deg; ``radius``: pivot → wrist, m (forearm ≈ 0.3 about the elbow, arm ≈ 0.6 about the shoulder);
    ``twist``: forearm pronation/supination at the top of a repetition, deg; ``shift``: (x, y, z) wrist
    translation at the top, m (per 1.0 of ``reach``); ``reach``: (lo, hi) scale of ``shift``;
    ``tempo``: (lo, hi) repetitions per second."""

    pitch: tuple[float, float]
    roll: tuple[float, float]
    axis: tuple[float, float, float]
    rom: tuple[float, float]
    radius: float
    twist: float = 0.0
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    reach: tuple[float, float] = (0.0, 0.0)
    tempo: tuple[float, float] = (0.25, 0.45)


EXERCISES: dict[str, Exercise] = {
    "curl": Exercise(pitch=(-75, 6), roll=(170, 12), axis=(0, -1, 0), rom=(110, 140), radius=0.3, twist=15),
    "front_raise": Exercise(pitch=(-80, 5), roll=(90, 12), axis=(0, -1, 0), rom=(75, 100), radius=0.6, twist=5,
                            tempo=(0.25, 0.4)),
    "lateral_raise": Exercise(pitch=(-80, 5), roll=(90, 12), axis=(-1, 0, 0), rom=(70, 95), radius=0.6, twist=5,
                              tempo=(0.25, 0.4)),
    "shoulder_press": Exercise(pitch=(80, 6), roll=(90, 12), axis=(-1, 0, 0), rom=(10, 20), radius=0.3,
                               shift=(0.0, 0.0, 1.0), reach=(0.3, 0.45)),
    "tricep_extension": Exercise(pitch=(85, 6), roll=(170, 12), axis=(0, -1, 0), rom=(90, 125), radius=0.3,
                                 twist=5),
    "row": Exercise(pitch=(0, 8), roll=(90, 12), axis=(0, 0, 1), rom=(20, 35), radius=0.3, twist=10,
                    shift=(-1.0, 0.0, 0.0), reach=(0.25, 0.4)),
}


@dataclass(frozen=True)
class Style:
    """How one subject exercises: tempo and range-of-motion factors, the share of a repetition spent
    lifting and holding at the top, the grip (pitch, roll) offsets in degrees per exercise and the sensor
    mounting rotation (quaternion)."""

    tempo: float
    rom: float
    lift: float
    hold: float
    mount: np.ndarray
    grip: dict[str, tuple[float, float]]


def draw_style(rng: np.random.Generator) -> Style:
    """A subject's exercise style; the mounting rotation is modest (≤ ``MOUNT_MAX_DEG``)."""
    direction = rng.normal(size=3)
    angle = math.radians(rng.uniform(0.0, MOUNT_MAX_DEG))
    mount = qexp(direction / np.linalg.norm(direction) * angle)
    grip = rng.normal(0.0, GRIP_SD_DEG, (len(EXERCISES), 2))
    return Style(tempo=rng.uniform(*TEMPO_SCALE), rom=rng.uniform(*ROM_SCALE), lift=rng.uniform(0.3, 0.45),
                 hold=rng.uniform(0.03, 0.15), mount=mount,
                 grip={name: (float(g[0]), float(g[1])) for name, g in zip(EXERCISES, grip)})


def repetition(u: np.ndarray, lift: float, hold: float) -> np.ndarray:
    """Position (0 = start, 1 = top) at repetition phase ``u`` ∈ [0, 1): a quintic lift over ``lift``,
    a hold, a lower as long as 1.2 × the lift, then a pause at the start. Smooth to the acceleration."""
    lower = 1.2 * lift

    def ramp(x):
        x = np.clip(x, 0.0, 1.0)
        return x * x * x * (10 - 15 * x + 6 * x * x)

    return np.where(u < lift + hold, ramp(u / lift), 1.0 - ramp((u - lift - hold) / lower))


def set_envelope(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """(n,) 0 → 1 → 0: the repetitions fade in after 0–3 s of holding the start pose and out before the
    end (1 s quintic ramps), so a set's first and last windows may hold no repetition."""
    t = np.arange(n) / rate
    start, end = rng.uniform(*IDLE_S), t[-1] - rng.uniform(*IDLE_S) if n else 0.0

    def ramp(x):
        x = np.clip(x, 0.0, 1.0)
        return x * x * x * (10 - 15 * x + 6 * x * x)

    return ramp(t - start) * ramp(end - t)


def exercise_bout(rng: np.random.Generator, name: str, style: Style, n: int,
                  rate: float) -> tuple[np.ndarray, np.ndarray]:
    """One set of exercise ``name`` over ``n`` samples: orientation (n, 4) device → world (mounting
    included) and the wrist's linear acceleration (n, 3) in the world frame, m/s²."""
    ex = EXERCISES[name]
    tempo = rng.uniform(*ex.tempo) * style.tempo * (1 + rng.uniform(-0.08, 0.08))
    f = tempo * (1 + 0.05 * band_noise(rng, n, rate, 0.005, 0.05, 1)[:, 0])
    u = (rng.uniform() + np.cumsum(f) / rate) % 1.0
    w = repetition(u, style.lift, style.hold) * set_envelope(rng, n, rate)
    rom = math.radians(rng.uniform(*ex.rom)) * style.rom * (1 + 0.04 * band_noise(rng, n, rate, 0.02, 0.3, 1)[:, 0])
    rom = rom * (1 - rng.uniform(0, FATIGUE) * np.linspace(0.0, 1.0, n))
    theta = rom * w  # (n,) rotation about the exercise axis, rad

    grip_pitch, grip_roll = style.grip[name]
    pitch = math.radians(rng.normal(*ex.pitch) + grip_pitch)
    roll = math.radians(rng.normal(*ex.roll) + grip_roll)
    q_pose = qmul(axis_rotation(1, -pitch), axis_rotation(0, roll))
    ax = np.asarray(ex.axis, float) / np.linalg.norm(ex.axis)
    q_move = qexp(theta[:, None] * ax)  # about a heading-frame axis through the pivot
    # local wrist motion: twist with the lift, postural sway, tremor under load, slow drift
    e = np.zeros((n, 3))
    e[:, 0] = math.radians(ex.twist) * w
    e += band_noise(rng, n, rate, 0.05, 0.6, 3) * math.radians(1.5)
    e += band_noise(rng, n, rate, 6.0, 12.0, 3) * math.radians(0.3)
    e += band_noise(rng, n, rate, 0.002, 0.03, 3) * math.radians(2.0)

    # wrist position: on a circle about the pivot, plus the translation of presses and rows
    forearm = qrotate(q_pose, np.array([1.0, 0.0, 0.0]))
    pos = qrotate(q_move, forearm * ex.radius)
    pos += np.outer(w, np.asarray(ex.shift) * rng.uniform(*ex.reach))
    pos += band_noise(rng, n, rate, 0.05, 0.5, 3) * 0.005  # body sway, m
    acc = np.gradient(np.gradient(pos, 1 / rate, axis=0), 1 / rate, axis=0) if n > 2 else np.zeros_like(pos)

    yaw = rng.uniform(0, 2 * np.pi) + np.cumsum(band_noise(rng, n, rate, 0.005, 0.2, 1)[:, 0] * 0.02) / rate
    q_yaw = axis_rotation(2, yaw)
    q = qmul(qmul(q_yaw, q_move), qmul(q_pose, qmul(qexp(e), style.mount)))
    return q, qrotate(q_yaw, acc)
