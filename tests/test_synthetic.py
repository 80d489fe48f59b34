"""The synthetic wrist-IMU generator: determinism, shapes, physics, subjects, prepare end-to-end, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wearspec.config import PrepareConfig, SyntheticConfig
from wearspec.data import synthetic
from wearspec.data.prepare import prepare
from wearspec.data.synthetic import CHANNELS, GRAVITY, PROFILES, generate, open_source
from wearspec.errors import WearspecError

RATE = 50.0


def small(**kw) -> SyntheticConfig:
    base = dict(subjects=3, minutes_per_subject=3.0, rate=RATE, seed=0)
    base.update(kw)
    return SyntheticConfig(**base)


@pytest.fixture(scope="module")
def recordings() -> list:
    """6 subjects × 6 min, generated once for the physics checks."""
    return list(generate(small(subjects=6, minutes_per_subject=6.0)))


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the runs of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def bouts(recs, activity: str, min_s: float = 10.0):
    code = SyntheticConfig().activities.index(activity)
    for r in recs:
        for a, b in runs(r.labels == code):
            if b - a >= min_s * r.rate:
                yield r.data[:, a:b]


def test_deterministic_bitwise_and_seed_changes_data():
    a = list(generate(small(subjects=2, minutes_per_subject=1.0)))
    b = list(generate(small(subjects=2, minutes_per_subject=1.0)))
    for x, y in zip(a, b):
        assert x.data.tobytes() == y.data.tobytes()
        assert x.labels.tobytes() == y.labels.tobytes()
    c = list(generate(small(subjects=2, minutes_per_subject=1.0, seed=1)))
    assert not np.array_equal(a[0].data, c[0].data)
    assert not np.array_equal(a[0].data, a[1].data)  # subjects differ


def test_shapes_ids_and_labels():
    cfg = small(subjects=2, minutes_per_subject=1.5, unlabelled_subjects=2)
    recs = list(generate(cfg))
    assert [r.subject for r in recs] == ["S01", "S02", "U01", "U02"]
    assert [r.recording for r in recs] == ["S01-r1", "S02-r1", "U01-r1", "U02-r1"]
    for r in recs:
        assert r.data.shape == (len(CHANNELS), int(1.5 * 60 * RATE))
        assert r.data.dtype == np.float32 and np.isfinite(r.data).all()
        assert r.rate == RATE and r.source == "synthetic"
    for r in recs[:2]:
        assert r.labels.shape == (r.data.shape[1],)
        assert r.labels.min() >= -1 and r.labels.max() < len(cfg.activities)
        assert (r.labels == -1).mean() < 0.2  # transitions are short
    assert recs[2].labels is None and recs[3].labels is None
    assert CHANNELS == ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]


def test_every_activity_appears_for_every_subject_even_in_short_recordings(recordings):
    n = len(SyntheticConfig().activities)
    for r in recordings:
        assert set(np.unique(r.labels)) >= set(range(n))
    for r in generate(small(subjects=2, minutes_per_subject=1.0)):
        assert set(np.unique(r.labels)) >= set(range(n))


def test_subset_and_order_of_activities_sets_the_label_codes():
    cfg = small(subjects=1, minutes_per_subject=2.0, activities=["running", "lying"])
    (r,) = generate(cfg)
    assert set(np.unique(r.labels)) == {-1, 0, 1}
    run = r.data[:3, r.labels == 0]
    lie = r.data[:3, r.labels == 1]
    assert np.linalg.norm(run, axis=0).std() > 5 * np.linalg.norm(lie, axis=0).std()


def test_gravity_magnitude_in_static_activities(recordings):
    k = int(RATE)  # 1 s moving average
    for activity in ("lying", "sitting", "standing"):
        medians = []
        for x in bouts(recordings, activity):
            norm = np.linalg.norm(x[:3].astype(np.float64), axis=0)
            low = np.convolve(norm, np.ones(k) / k, mode="valid")
            medians.append(np.median(low))
            assert np.abs(low - GRAVITY).max() < 1.5, activity  # a gesture may add a little
        assert medians and np.allclose(medians, GRAVITY, atol=0.35), (activity, medians)


def test_cadence_is_the_dominant_frequency_of_the_acc_norm(recordings):
    s = synthetic
    for activity in ("walking", "running"):
        lo, hi = PROFILES[activity].cadence
        lo_all = lo * s.CADENCE_SCALE[0] * s.ATYPICAL_CADENCE * (1 - s.BOUT_CADENCE_JITTER) * 0.93
        hi_all = hi * s.CADENCE_SCALE[1] * (1 + s.BOUT_CADENCE_JITTER) * 1.07
        doms = []
        for x in bouts(recordings, activity):
            norm = np.linalg.norm(x[:3].astype(np.float64), axis=0)
            power = np.abs(np.fft.rfft(norm - norm.mean())) ** 2
            f = np.fft.rfftfreq(norm.size, 1 / RATE)
            band = (f > 0.5) & (f < 6.0)
            doms.append(f[band][power[band].argmax()])
        doms = np.array(doms)
        assert doms.size >= 4
        assert np.mean((doms >= lo_all) & (doms <= hi_all)) >= 0.8, (activity, doms)
        assert lo * 0.85 <= np.median(doms) <= hi * 1.1, (activity, doms)


def test_gyroscope_agrees_with_the_rotation_of_gravity():
    """Integrating the gyroscope across a transition between static activities turns the gravity
    direction measured before it into the one measured after it."""
    cfg = small(subjects=3, minutes_per_subject=4.0, activities=["lying", "sitting", "standing"])
    checked = 0
    for r in generate(cfg):
        acc, gyro = r.data[:3].astype(np.float64), r.data[3:].astype(np.float64)
        for a, b in runs(r.labels == -1):
            pre, post = slice(a - 10, a), slice(b, b + 10)
            g0 = acc[:, pre].mean(1)
            g1 = acc[:, post].mean(1)
            g0, g1 = g0 / np.linalg.norm(g0), g1 / np.linalg.norm(g1)
            g = g0.copy()
            for i in range(a - 5, b + 5):  # world-fixed vector in the body frame: dg/dt = g × ω
                g = g + np.cross(g, gyro[:, i]) / RATE
                g /= np.linalg.norm(g)
            turned = np.degrees(np.arccos(np.clip(g0 @ g1, -1, 1)))
            error = np.degrees(np.arccos(np.clip(g @ g1, -1, 1)))
            if turned > 20:
                assert error < max(6.0, 0.2 * turned), (r.subject, a, turned, error)
                checked += 1
    assert checked >= 3


def test_signals_stay_in_a_plausible_range(recordings):
    """No jumps in the orientation track (they would show as gyroscope spikes), no absurd values."""
    for r in recordings:
        gyro = np.linalg.norm(r.data[3:], axis=0)
        acc = np.linalg.norm(r.data[:3], axis=0)
        assert gyro.max() < 12.0, r.subject  # rad/s
        assert acc.max() < 80.0, r.subject  # m/s² (running impacts reach ~5 g)


def test_existing_subjects_do_not_change_when_more_are_added():
    few = list(generate(small(subjects=2, minutes_per_subject=1.0, unlabelled_subjects=1)))
    more = list(generate(small(subjects=4, minutes_per_subject=1.0, unlabelled_subjects=2)))
    by_name = {r.subject: r for r in more}
    for r in few:
        assert r.data.tobytes() == by_name[r.subject].data.tobytes(), r.subject
        if r.labels is not None:
            assert np.array_equal(r.labels, by_name[r.subject].labels)


def test_open_source_follows_the_reader_protocol():
    cfg = PrepareConfig()
    cfg.synthetic = small(subjects=1, minutes_per_subject=0.5)
    src = open_source(None, cfg)
    assert src.name == "synthetic" and src.channels == CHANNELS and src.inputs == []
    assert src.label_names == cfg.synthetic.activities
    assert src.meta["synthetic"]["subjects"] == 1
    (rec,) = list(src.items)
    assert rec.data.shape == (6, 1500)


def test_prepare_synthetic_end_to_end(tmp_path):
    cfg = PrepareConfig()  # default window: 5 s, hop 2.5 s at 50 Hz
    cfg.synthetic = small(subjects=4, minutes_per_subject=1.0, unlabelled_subjects=1)
    store, reused = prepare("synthetic", None, tmp_path / "store", cfg, progress=False)
    assert not reused
    assert store.channels == CHANNELS
    assert store.label_names == cfg.synthetic.activities
    assert store.subject_names == ["S01", "S02", "S03", "S04", "U01"]
    per_recording = 1 + (3000 - 250) // 125
    assert len(store) == 5 * per_recording
    assert store.window == 250 and store.rate == 50.0
    unl = store.subjects == store.subject_names.index("U01")
    assert (store.labels[unl] == -1).all()
    lab = store.labels[~unl]
    assert (lab >= 0).mean() > 0.7 and lab.max() < len(store.label_names)
    assert store.meta["reader"] == "synthetic" and store.meta["synthetic"]["subjects"] == 4
    x = store.read_batch(np.arange(len(store)))
    assert np.isfinite(x).all() and 5 < np.abs(x[:, :3]).max() < 100
    again, reused = prepare("synthetic", None, tmp_path / "store", cfg, progress=False)
    assert reused and len(again) == len(store)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(subjects=0), "synthetic.subjects"),
        (dict(subjects=-2), "synthetic.subjects"),
        (dict(minutes_per_subject=0.0), "synthetic.minutes_per_subject"),
        (dict(minutes_per_subject=float("nan")), "synthetic.minutes_per_subject"),
        (dict(rate=0.0), "synthetic.rate"),
        (dict(rate=-50.0), "synthetic.rate"),
        (dict(rate=5.0), "synthetic.rate"),
        (dict(activities=[]), "synthetic.activities"),
        (dict(activities=["walking", "swimming"]), "unknown activity 'swimming'"),
        (dict(activities=["walking", "walking"]), "more than once"),
        (dict(unlabelled_subjects=-1), "synthetic.unlabelled_subjects"),
        (dict(seed=-1), "synthetic.seed"),
    ],
)
def test_bad_config_values_raise_wearspec_error(change, message):
    cfg = dataclasses.replace(small(), **change)
    with pytest.raises(WearspecError, match=message):
        list(generate(cfg))
    prep = PrepareConfig()
    prep.synthetic = cfg
    with pytest.raises(WearspecError, match=message):
        open_source(None, prep)


def test_unknown_activity_error_names_the_known_ones():
    with pytest.raises(WearspecError) as e:
        list(generate(small(activities=["jumping"])))
    for name in ("lying", "sitting", "standing", "walking", "running", "stairs", "cycling"):
        assert name in str(e.value)


def test_other_rates_work():
    (r,) = generate(small(subjects=1, minutes_per_subject=0.5, rate=100.0))
    assert r.data.shape == (6, 3000) and np.isfinite(r.data).all()
    (r,) = generate(small(subjects=1, minutes_per_subject=0.5, rate=10.0))
    assert r.data.shape == (6, 300) and np.isfinite(r.data).all()
