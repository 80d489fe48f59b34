"""The embedded default data set: simulated wrist-worn IMU recordings of daily activities.

Each subject wears a 6-axis IMU on the wrist: accelerometer ``acc_x, acc_y, acc_z`` (m/s², specific
force, gravity included: a device at rest reads +9.81 along world "up") and gyroscope ``gyro_x,
gyro_y, gyro_z`` (rad/s). Device axes, for a device worn as designed: x along the forearm towards
the hand, z out of the back of the wrist, y = z × x. One :class:`Recording` per subject holds bouts
of the activities in :attr:`SyntheticConfig.activities` (known: ``lying, sitting, standing,
walking, running, stairs, cycling``), 20–90 s each, in random order (each activity at least once
per subject when the recording is long enough, or in shortened bouts when it is not).

How a bout is simulated (vectorised numpy, one bout at a time):

* **orientation** (quaternion per sample, device → world): heading ``yaw(t)`` ⊗ wrist pose ⊗
  local wrist motion ⊗ per-subject mounting rotation. The wrist pose (forearm pitch and roll) is
  drawn per bout from a mixture of poses per activity (standing: arm hanging, holding a phone,
  arms crossed; sitting: desk, lap, armrest; lying: any roll, or holding a phone above the face;
  cycling: forearm pitched forward on the handlebar ...). Local motion: arm swing about the body's
  lateral axis, postural sway, slow drift, occasional fidgets and, for the static activities,
  intermittent 0.5–3 Hz hand activity (typing, eating, talking with the hands).
* **gravity** is rotated into the device frame by that orientation; the **gyroscope** is the
  body-frame angular velocity of the same quaternion track (``2 q* ⊗ dq/dt``), so the two sensors
  always agree.
* **locomotion**: a step (or pedal) phase with a slowly varying cadence drives vertical bounce with
  harmonics, fore-aft and lateral sway, the arm swing (at half the step rate) with its pendulum
  acceleration, and impact transients at each step (strong for running and stairs).
  Cycling adds band-limited 4–12 Hz handlebar vibration (from smooth road to rough).
* **subjects** differ in mounting rotation, cadence and amplitude scale, arm length, sway and
  sensor imperfections; about one in five is *atypical* (slower cadence, weaker movements).
* **sensor**: per-axis scale error, constant bias plus a slow bias random walk, white noise.
* **transitions**: each bout after the first starts with a 1–3 s ramp in which the previous bout
  runs on and fades out while the new one fades in: orientation slerped from the old track to the
  new one, linear acceleration cross-faded (no jumps in either sensor). Its samples are labelled
  ``-1`` (unlabelled): they belong to neither activity; with the default ``majority`` window label
  policy a window is labelled by the activity that covers most of it.

Deliberate overlap (so that a held-out-subject classifier is far from perfect): sitting and standing
share poses (forearm horizontal or hanging) and differ mainly in sway and pose frequencies, which the
mounting rotation and per-subject sway blur further; lying overlaps sitting at the desk; hand
activity while sitting resembles the small periodic motion of cycling on a smooth road; stairs and
walking differ in cadence, swing and impacts, which atypical subjects and per-bout variation make
overlap; a phone held while walking suppresses the arm swing; an atypical runner jogs at a fast
walker's cadence. ``benchmarks/synthetic_baseline.py`` measures the result: a feature-based
logistic regression reaches a macro-F1 of about 0.8 on held-out subjects (0.95 on its training
subjects).

Settings (``synthetic.*`` of ``wearspec prepare synthetic``; the window is ``window.*`` as for any reader):
``subjects``, ``unlabelled_subjects``, ``minutes_per_subject``, ``rate`` (Hz, ≥ 10), ``seed``;
``activities``: names from :data:`KNOWN_ACTIVITIES` or whole sets, ``[daily]`` (the seven above) or
``[exercise]`` (upper-body exercises whose classes differ in plane and path of the wrist's motion,
:mod:`wearspec.data.synthetic_exercise`), in label-code order; ``channels``: ``all`` (6), ``acc`` or
``gyro`` (3; drawn in full, then selected, so they equal the 6-channel draw's). For example::

    wearspec prepare synthetic -o data/short window.length_s=2.56 window.hop_s=1.28     # 128 samples, hop 64
    wearspec prepare synthetic -o data/acc synthetic.channels=acc
    wearspec prepare synthetic -o data/100hz synthetic.rate=100 window.rate=100 window.length_s=10 window.hop_s=5
    wearspec prepare synthetic -o data/small synthetic.subjects=10 synthetic.minutes_per_subject=12.5  # ~3k windows
    wearspec prepare synthetic -o data/gym "synthetic.activities=[exercise]" window.length_s=2.56 window.hop_s=1.28

Determinism: subject ``S<k>`` is drawn from ``np.random.default_rng([seed, 0, k])`` and unlabelled
subject ``U<k>`` from ``[seed, 1, k]``, so the same config gives bitwise identical arrays and adding
subjects does not change existing ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from wearspec.config import to_dict
from wearspec.data.kinematics import axis_rotation, band_noise, continuous, qconj, qexp, qlog, qmul, qrotate
from wearspec.data.readers import Source
from wearspec.data.readers.config import SyntheticConfig
from wearspec.data.synthetic_exercise import EXERCISE_ACTIVITIES, EXERCISES, REST_AS, draw_style, exercise_bout
from wearspec.data.windowing import Recording
from wearspec.errors import WearspecError

if TYPE_CHECKING:
    from wearspec.data.prepare import PrepareConfig

# Bump when the simulation changes, so that `prepare` rebuilds stores made by an older generator.
GENERATOR_VERSION = 2
CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
CHANNEL_SETS = {"all": CHANNELS, "acc": CHANNELS[:3], "gyro": CHANNELS[3:]}  # synthetic.channels
GRAVITY = 9.81
TRANSITION_LABEL = -1
BOUT_S = (20.0, 90.0)  # bout length range, seconds
TRANSITION_S = (1.0, 3.0)  # ramp at the start of every bout but the first
MIN_RATE = 10.0  # the motion has content up to ~5 Hz (running harmonics)
ATYPICAL_FRACTION = 0.2
ATYPICAL_CADENCE, ATYPICAL_AMPLITUDE = 0.8, 0.6
CADENCE_SCALE = (0.92, 1.08)  # per-subject cadence factor (typical subjects)
BOUT_CADENCE_JITTER = 0.05  # per-bout factor 1 ± this
MOUNT_DEG = 20.0  # SD per axis of the device mounting rotation (rotation vector)


@dataclass(frozen=True)
class Pose:
    """A wrist pose: forearm pitch (deg, + up) and roll about the forearm (deg, 0 = back of the
    wrist up), each ~ N(mean, sd); ``weight`` in the activity's mixture; ``swing`` scales arm swing."""

    pitch: tuple[float, float]
    roll: tuple[float, float]
    weight: float = 1.0
    swing: float = 1.0


@dataclass(frozen=True)
class Profile:
    """How one activity moves. Ranges (lo, hi) are drawn uniformly per bout.

    cadence: step (or pedal) frequency in Hz, 0 for static activities; swing_ratio: arm swing
    frequency / cadence; swing_deg: arm swing amplitude; bounce: vertical acceleration at the
    cadence (m/s²) with ``harmonics`` (relative amplitudes at 2× and 3×); forward/lateral: fore-aft
    acceleration at the cadence and lateral at half of it (m/s²); impact: peak of the per-step
    transients (m/s²); vibration: band-limited 4–12 Hz acceleration (m/s² RMS); sway_deg / sway_hz:
    postural sway RMS angle and bandwidth; fidgets: short gestures per minute; gestures: RMS angle (deg)
    of intermittent 0.5–3 Hz hand activity (typing, eating, talking with the hands).
    """

    poses: tuple[Pose, ...]
    cadence: tuple[float, float] = (0.0, 0.0)
    swing_ratio: float = 0.5
    swing_deg: tuple[float, float] = (0.0, 0.0)
    bounce: tuple[float, float] = (0.0, 0.0)
    harmonics: tuple[float, float] = (0.3, 0.1)
    forward: tuple[float, float] = (0.0, 0.0)
    lateral: float = 0.0
    impact: tuple[float, float] = (0.0, 0.0)
    vibration: tuple[float, float] = (0.0, 0.0)
    sway_deg: float = 1.0
    sway_hz: float = 0.5
    fidgets: float = 0.0
    gestures: float = 0.0
    radius: float = 1.0  # pendulum radius of the wrist / arm length (elbow bent: < 1)
    turning: float | None = None  # heading change rate RMS, rad/s (None: 0.25 moving, 0.02 static)


PROFILES: dict[str, Profile] = {
    "lying": Profile(poses=(Pose((0, 12), (0, 110)), Pose((15, 10), (40, 40), 0.4), Pose((40, 15), (150, 30), 0.3)),
                     sway_deg=0.8, sway_hz=0.3, fidgets=0.5, gestures=2.0),
    "sitting": Profile(poses=(Pose((5, 10), (5, 25), 0.45), Pose((-20, 12), (50, 30), 0.35),
                              Pose((-60, 15), (80, 25), 0.2)), sway_deg=1.5, sway_hz=0.6, fidgets=1.0, gestures=4.0),
    "standing": Profile(poses=(Pose((-72, 12), (80, 25), 0.5), Pose((15, 12), (15, 30), 0.25),
                               Pose((-25, 15), (60, 30), 0.25)), sway_deg=2.5, sway_hz=0.8, fidgets=1.0, gestures=4.0),
    "walking": Profile(poses=(Pose((-75, 10), (85, 20)), Pose((10, 12), (20, 25), 0.3, swing=0.15)), cadence=(1.6, 2.0),
                       swing_deg=(8, 22), bounce=(1.8, 3.5), harmonics=(0.35, 0.15), forward=(0.8, 1.5),
                       lateral=0.4, impact=(0.8, 2.0), sway_deg=1.5),
    "running": Profile(poses=(Pose((-15, 15), (80, 15)),), cadence=(2.4, 3.0), swing_deg=(12, 30), bounce=(3.5, 9.0),
                       harmonics=(0.4, 0.2), forward=(1.5, 3.0), lateral=0.8, impact=(3.0, 9.0), sway_deg=2.0,
                       radius=0.6),
    "stairs": Profile(poses=(Pose((-70, 10), (85, 20), 0.6), Pose((-15, 15), (30, 30), 0.4, swing=0.3)),
                      cadence=(1.35, 1.85), swing_deg=(6, 18), bounce=(1.8, 3.2), harmonics=(0.4, 0.2),
                      forward=(0.6, 1.2), lateral=0.5, impact=(1.5, 4.0), sway_deg=2.0),
    "cycling": Profile(poses=(Pose((-30, 10), (10, 15), 0.5), Pose((-25, 10), (70, 15), 0.25),
                              Pose((-15, 12), (30, 30), 0.25)), cadence=(1.0, 1.5), swing_ratio=1.0,
                       swing_deg=(0.3, 2.0), bounce=(0.1, 0.35), harmonics=(2.0, 0.3), forward=(0.05, 0.25),
                       lateral=0.2, vibration=(0.02, 0.35), sway_deg=1.5, turning=0.1),
}
DAILY_ACTIVITIES = tuple(PROFILES)
# names that stand for a whole set in synthetic.activities (e.g. [exercise])
ACTIVITY_SETS: dict[str, tuple[str, ...]] = {"daily": DAILY_ACTIVITIES, "exercise": EXERCISE_ACTIVITIES}
KNOWN_ACTIVITIES = DAILY_ACTIVITIES + EXERCISE_ACTIVITIES


def activity_names(cfg: SyntheticConfig) -> list[str]:
    """``cfg.activities`` with set names expanded, in order: the label names (codes 0, 1, ...)."""
    return [name for a in cfg.activities for name in ACTIVITY_SETS.get(a, (a,))]


# ---------------------------------------------------------------------------------------------
# Validation and the reader entry point
# ---------------------------------------------------------------------------------------------


MAX_SAMPLES = 1e8  # per subject: 3 GB of float64 for 4 channels, far beyond an example data set


def validate_config(cfg: SyntheticConfig) -> None:
    """Raise :class:`WearspecError` naming the ``synthetic.*`` key for an impossible setting."""

    def bad(key: str, expected: str, value) -> WearspecError:
        return WearspecError(f"synthetic.{key}: expected {expected}, got {value!r}")

    if isinstance(cfg.subjects, bool) or not isinstance(cfg.subjects, int) or cfg.subjects < 1:
        raise bad("subjects", "an integer ≥ 1", cfg.subjects)
    u = cfg.unlabelled_subjects
    if isinstance(u, bool) or not isinstance(u, int) or u < 0:
        raise bad("unlabelled_subjects", "an integer ≥ 0", u)
    m = cfg.minutes_per_subject
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not (math.isfinite(m) and m > 0):
        raise bad("minutes_per_subject", "a positive number of minutes", m)
    r = cfg.rate
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not (math.isfinite(r) and r > 0):
        raise bad("rate", "a positive rate in Hz", r)
    if r < MIN_RATE:
        raise bad("rate", f"≥ {MIN_RATE:g} Hz (the simulated motion has content up to ~5 Hz)", r)
    if m * 60.0 * r < 1:
        raise bad("minutes_per_subject", f"at least one sample at {r:g} Hz", m)
    if m * 60.0 * r > MAX_SAMPLES:
        raise bad("minutes_per_subject", f"at most {MAX_SAMPLES:.0e} samples a subject (at {r:g} Hz: "
                  f"{MAX_SAMPLES / 60 / r:.4g} minutes; check synthetic.rate)", m)
    if cfg.subjects + u > 10_000:
        raise bad("subjects", "at most 10000 subjects (with unlabelled_subjects)", cfg.subjects + u)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise bad("seed", "an integer ≥ 0", cfg.seed)
    if cfg.channels not in CHANNEL_SETS:
        raise bad("channels", f"one of {', '.join(CHANNEL_SETS)}", cfg.channels)
    if not list(cfg.activities):
        raise bad("activities", f"a non-empty list of activities from {', '.join(KNOWN_ACTIVITIES)}", cfg.activities)
    for a in cfg.activities:
        if a not in KNOWN_ACTIVITIES and a not in ACTIVITY_SETS:
            raise WearspecError(
                f"synthetic.activities: unknown activity {a!r}; the generator knows {', '.join(KNOWN_ACTIVITIES)} "
                f"and the sets {', '.join(ACTIVITY_SETS)}"
            )
    acts = activity_names(cfg)
    dup = sorted({a for a in acts if acts.count(a) > 1})
    if dup:
        raise WearspecError(f"synthetic.activities: {dup[0]!r} is listed more than once")


def open_source(path: Path | None, cfg: PrepareConfig) -> Source:
    """The reader protocol: ``path`` is ignored; recordings are generated lazily from ``cfg.synthetic``."""
    s = cfg.synthetic
    validate_config(s)
    return Source(
        name="synthetic",
        channels=list(CHANNEL_SETS[s.channels]),
        label_names=activity_names(s),
        items=generate(s),
        inputs=[],
        meta={
            "generator_version": GENERATOR_VERSION,
            "synthetic": to_dict(s),
            "units": {"acc": "m/s^2 (gravity included)", "gyro": "rad/s"},
            "transition_label": TRANSITION_LABEL,
        },
    )


def generate(cfg: SyntheticConfig) -> Iterator[Recording]:
    """One :class:`Recording` (C, T) float32 per subject: ``S01``.. labelled, then ``U01``.. unlabelled.

    C is 6, or 3 with ``channels`` ``acc`` or ``gyro``. Labels are codes into :func:`activity_names`
    with ``-1`` for transition samples; unlabelled subjects have ``labels=None``.
    """
    validate_config(cfg)
    codes = {a: i for i, a in enumerate(activity_names(cfg))}
    jobs = [("S", 0, k) for k in range(1, cfg.subjects + 1)]
    jobs += [("U", 1, k) for k in range(1, cfg.unlabelled_subjects + 1)]
    for prefix, group, k in jobs:
        rng = np.random.default_rng([cfg.seed, group, k])
        data, labels = simulate_subject(rng, cfg, codes)
        name = f"{prefix}{k:02d}"
        yield Recording(
            subject=name,
            recording=f"{name}-r1",
            data=data,
            rate=float(cfg.rate),
            labels=labels if group == 0 else None,
            source="synthetic",
        )


@dataclass
class _Subject:
    mount: np.ndarray  # quaternion: device relative to the wrist
    cadence: float
    amplitude: float
    arm: float  # shoulder-to-wrist radius, m
    sway: float
    acc_scale: np.ndarray = field(default_factory=lambda: np.ones(3))
    gyro_scale: np.ndarray = field(default_factory=lambda: np.ones(3))


def _draw_subject(rng: np.random.Generator) -> _Subject:
    mount = qexp(rng.normal(0.0, math.radians(MOUNT_DEG), 3))
    atypical = rng.random() < ATYPICAL_FRACTION
    cadence = rng.uniform(*CADENCE_SCALE) * (ATYPICAL_CADENCE if atypical else 1.0)
    amplitude = math.exp(rng.normal(0.0, 0.2)) * (ATYPICAL_AMPLITUDE if atypical else 1.0)
    return _Subject(mount=mount, cadence=cadence, amplitude=amplitude, arm=rng.uniform(0.5, 0.7),
                    sway=math.exp(rng.normal(0.0, 0.5)), acc_scale=1 + rng.normal(0, 0.01, 3),
                    gyro_scale=1 + rng.normal(0, 0.01, 3))


def _schedule(rng: np.random.Generator, n_total: int, rate: float, n_act: int) -> list[tuple[int, int]]:
    """(activity code, samples) bouts filling ``n_total``: rounds of shuffled activities. The first
    round is shrunk to fit a short recording so that every activity appears when possible."""
    bouts: list[tuple[int, int]] = []
    total, prev, first = 0, -1, True
    while total < n_total:
        perm = rng.permutation(n_act)
        if n_act > 1 and perm[0] == prev:
            perm[[0, 1]] = perm[[1, 0]]
        d = rng.uniform(*BOUT_S, n_act) * rate
        if first and d.sum() > n_total:
            d *= n_total / d.sum()
        first = False
        for a, k in zip(perm, d):
            k = min(max(1, int(round(k))), n_total - total)
            bouts.append((int(a), k))
            total += k
            if total >= n_total:
                break
        prev = int(perm[-1])
    if len(bouts) > n_act and bouts[-1][1] < 0.25 * BOUT_S[0] * rate:  # fold a stub into the bout before
        a, k = bouts.pop()
        bouts[-1] = (bouts[-1][0], bouts[-1][1] + k)
    return bouts


def _impacts(rng: np.random.Generator, phase: np.ndarray, rate: float, mean: float) -> np.ndarray:
    """(n,) transients at every step (each 2π of ``phase``): damped ~8 Hz ringing, random amplitudes."""
    n = phase.size
    steps = np.flatnonzero(np.diff(np.floor(phase / (2 * np.pi))) > 0) + 1
    train = np.zeros(n)
    train[steps] = mean * rng.lognormal(0.0, 0.3, steps.size)
    tau = np.arange(int(0.25 * rate)) / rate
    kernel = np.exp(-tau / 0.035) * np.cos(2 * np.pi * min(8.0, 0.35 * rate) * tau)
    return np.convolve(train, kernel)[:n]


def _bout(rng: np.random.Generator, p: Profile, subj: _Subject, n: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """One bout: orientation quaternions (n, 4) device → world and linear acceleration (n, 3) world m/s²."""
    weights = np.array([q.weight for q in p.poses])
    pose = p.poses[rng.choice(len(p.poses), p=weights / weights.sum())]
    pitch = math.radians(rng.normal(*pose.pitch))
    roll = math.radians(rng.normal(*pose.roll))
    q_pose = qmul(axis_rotation(1, -pitch), axis_rotation(0, roll))
    amp = subj.amplitude * rng.uniform(0.85, 1.15)

    # local wrist motion (rotation vector in the wrist frame): sway, slow drift, fidget gestures
    e = band_noise(rng, n, rate, 0.05, p.sway_hz, 3) * math.radians(p.sway_deg) * subj.sway
    e += band_noise(rng, n, rate, 0.002, 0.03, 3) * math.radians(3.0)
    for _ in range(rng.poisson(p.fidgets * n / rate / 60.0)):
        m = int(rng.uniform(1.0, 3.0) * rate)
        if m < 3 or m >= n:
            continue
        s = rng.integers(0, n - m)
        axis = rng.normal(size=3)
        e[s : s + m] += np.hanning(m)[:, None] * axis / np.linalg.norm(axis) * math.radians(rng.uniform(10, 35))
    if p.gestures > 0:  # intermittent hand activity: 0.5–3 Hz rotation under a slow on/off envelope
        env = np.clip(band_noise(rng, n, rate, 0.005, 0.05, 1) - rng.uniform(-0.5, 1.0), 0.0, 1.0)
        e += env * band_noise(rng, n, rate, 0.5, 3.0, 3) * math.radians(p.gestures)

    acc = np.zeros((n, 3))  # linear acceleration in the heading frame (x forward, y left, z up)
    turning = p.turning if p.turning is not None else (0.25 if p.cadence[1] > 0 else 0.02)
    yaw_rate = band_noise(rng, n, rate, 0.005, 0.2, 1)[:, 0] * turning
    yaw = rng.uniform(0, 2 * np.pi) + np.cumsum(yaw_rate) / rate
    if p.cadence[1] > 0:
        f0 = rng.uniform(*p.cadence) * subj.cadence * (1 + rng.uniform(-1, 1) * BOUT_CADENCE_JITTER)
        f = f0 * (1 + 0.03 * band_noise(rng, n, rate, 0.01, 0.1, 1)[:, 0])
        phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(f) / rate
        c = rng.uniform(0, 2 * np.pi, 6)
        h2, h3 = p.harmonics
        acc[:, 2] = rng.uniform(*p.bounce) * amp * (
            np.cos(phase) + h2 * np.cos(2 * phase + c[0]) + h3 * np.cos(3 * phase + c[1]) + 0.08 * np.cos(phase / 2 + c[2]))
        acc[:, 0] = rng.uniform(*p.forward) * amp * np.sin(phase + c[3])
        acc[:, 1] = p.lateral * amp * np.sin(phase / 2 + c[4])
        if p.impact[1] > 0:
            imp = _impacts(rng, phase, rate, rng.uniform(*p.impact) * amp)
            acc[:, 2] += imp
            acc[:, 0] += 0.3 * imp
        # arm swing about the body's lateral axis, with the wrist's pendulum acceleration
        psi = p.swing_ratio * phase + c[5]
        theta = math.radians(rng.uniform(*p.swing_deg)) * pose.swing * min(amp, 1.15) * (
            np.sin(psi) + 0.1 * np.sin(2 * psi + c[0]))
        lateral_local = qrotate(qconj(q_pose), np.array([0.0, 1.0, 0.0]))
        e += theta[:, None] * lateral_local
        pos = subj.arm * p.radius * np.stack([np.sin(theta), -np.cos(theta)], axis=1)
        a_pend = np.gradient(np.gradient(pos, 1 / rate, axis=0), 1 / rate, axis=0) if n > 2 else 0 * pos
        acc[:, [0, 2]] += a_pend
    if p.vibration[1] > 0:
        vib = rng.uniform(*p.vibration) * amp
        acc += band_noise(rng, n, rate, 4.0, 12.0, 3) * vib
        e += band_noise(rng, n, rate, 4.0, 12.0, 3) * math.radians(0.25) * vib  # ~0.25° per m/s²

    q_yaw = axis_rotation(2, yaw)
    q = qmul(qmul(q_yaw, q_pose), qmul(qexp(e), subj.mount))
    return q, qrotate(q_yaw, acc)


def simulate_subject(
    rng: np.random.Generator, cfg: SyntheticConfig, codes: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Data (C, T) float32 and per-sample labels (T,) int32 for one subject drawn from ``rng``.

    A set with exercises draws the subject's exercise style after the daily traits (so the daily
    set's draws are unchanged) and mounts the sensor with the style's modest rotation for every bout."""
    rate = float(cfg.rate)
    n_total = max(1, int(round(cfg.minutes_per_subject * 60.0 * rate)))
    subj = _draw_subject(rng)
    acts = activity_names(cfg)
    style = draw_style(rng) if any(a in EXERCISES for a in acts) else None
    if style is not None:
        subj.mount = style.mount
    bouts = _schedule(rng, n_total, rate, len(acts))
    # transition k ramps from bout k-1 into bout k; bout k-1 runs on for those samples so that its
    # movement fades out while bout k's fades in (no jump in orientation or amplitude)
    ramp = [0] + [min(int(rng.uniform(*TRANSITION_S) * rate), n // 3) for _, n in bouts[1:]] + [0]
    ramp = [m if m > 1 else 0 for m in ramp]
    qs, accs, labels = [], [], []
    tail_q = tail_acc = None
    for i, (a, n) in enumerate(bouts):
        if acts[a] in EXERCISES:
            q, acc = exercise_bout(rng, acts[a], style, n + ramp[i + 1], rate)
        else:
            q, acc = _bout(rng, PROFILES[REST_AS if acts[a] == "rest" else acts[a]], subj, n + ramp[i + 1], rate)
        lab = np.full(n, codes[acts[a]], np.int32)
        m = ramp[i]
        if m:
            w = np.linspace(0.0, 1.0, m)[:, None]
            w = w * w * (3 - 2 * w)  # smoothstep
            rel = continuous(qmul(qconj(tail_q), q[:m]))  # bout k relative to bout k-1, no jumps
            q[:m] = qmul(tail_q, qexp(w * qlog(rel)))
            acc[:m] = (1 - w) * tail_acc + w * acc[:m]
            lab[:m] = TRANSITION_LABEL
        tail_q, tail_acc = q[n:], acc[n:]
        qs.append(q[:n])
        accs.append(acc[:n])
        labels.append(lab)
    q = np.concatenate(qs)
    acc_world = np.concatenate(accs)
    n = q.shape[0]

    # keep the quaternion track continuous in sign, then ω_body = 2 vec(q* ⊗ dq/dt)
    q = continuous(q)
    dq = np.gradient(q, 1 / rate, axis=0) if n > 1 else np.zeros_like(q)
    gyro = 2.0 * qmul(qconj(q), dq)[:, 1:]
    acc = qrotate(qconj(q), acc_world + np.array([0.0, 0.0, GRAVITY]))

    # sensor: scale error, bias (constant + random walk), white noise
    dt = 1.0 / rate
    acc = acc * subj.acc_scale + rng.normal(0, 0.1, 3) + np.cumsum(rng.normal(0, 0.003 * math.sqrt(dt), (n, 3)), 0)
    acc += rng.normal(0, rng.uniform(0.02, 0.05), (n, 3))
    gyro = gyro * subj.gyro_scale + rng.normal(0, 0.01, 3) + np.cumsum(rng.normal(0, 5e-4 * math.sqrt(dt), (n, 3)), 0)
    gyro += rng.normal(0, rng.uniform(0.003, 0.008), (n, 3))
    data = np.concatenate([acc, gyro], axis=1).T.astype(np.float32)
    if cfg.channels != "all":  # drawn in full and then selected, so the kept channels equal the 6-channel draw's
        data = data[[CHANNELS.index(c) for c in CHANNEL_SETS[cfg.channels]]]
    return np.ascontiguousarray(data), np.concatenate(labels)
