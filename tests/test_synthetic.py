"""The synthetic wrist-IMU generator: determinism, shapes, physics, subjects, prepare end-to-end, validation."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from wearspec.data import synthetic, synthetic_exercise
from wearspec.data.prepare import PrepareConfig, prepare
from wearspec.data.readers.config import SyntheticConfig
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


def test_the_default_store_is_pinned(tmp_path):
    """The main job's numbers depend on the embedded default draw (24 labelled + 12 unlabelled subjects,
    5 s windows at hop 2.5 s): its labels and subjects exactly, its windows' float64 moments and three
    samples to ~float32 precision (exact hashes of floats would tie the test to one CPU's libm)."""
    cfg = PrepareConfig(synthetic=SyntheticConfig(unlabelled_subjects=12))
    store, _ = prepare("synthetic", None, tmp_path / "store", cfg, progress=False)
    x = store.read_batch(np.arange(len(store))).astype(np.float64)
    assert x.shape == (5148, 6, 250)
    digest = hashlib.sha256(store.labels.astype(np.int64).tobytes() + store.subjects.astype(np.int64).tobytes())
    assert digest.hexdigest() == "dd99ffefd501e1bee527d18d862b40f4ecb1450809d70bf470c38636620b802f"
    np.testing.assert_allclose(x.sum(axis=(0, 2)), [-3601998.014695784, 3797370.4410036067, 4201645.890701677,
                                                    2033.8561431510475, 2074.111822680452, -391.43544317879423],
                               rtol=1e-7, atol=1e-3)
    np.testing.assert_allclose((x**2).sum(axis=(0, 2)), [49075458.05216178, 47583134.83594223, 44662877.968838565,
                                                          198503.71210499993, 291516.0040458313, 708763.2362380177],
                               rtol=1e-7)
    np.testing.assert_allclose(x[[0, 1234, 5147], :, 100], [
        [-8.997654914855957, 4.531925201416016, -2.302694082260132, 0.371067613363266, -0.046028196811676025,
         0.08616069704294205],
        [-3.1002299785614014, 9.221435546875, 0.5618012547492981, 0.06156979873776436, -0.08989579975605011,
         -0.029469432309269905],
        [7.4744133949279785, 5.983275890350342, -1.3478103876113892, 0.059416767209768295, 0.033567875623703,
         -0.005697666667401791]], rtol=1e-5, atol=1e-6)


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


# ---------------------------------------------------------------------------------------------
# The data shapes of the SSL robustness matrix (benchmarks/ssl_matrix.py)
# ---------------------------------------------------------------------------------------------


def test_accelerometer_only_keeps_the_six_channel_draw():
    full = list(generate(small(subjects=2, minutes_per_subject=0.5)))
    acc = list(generate(small(subjects=2, minutes_per_subject=0.5, channels="acc")))
    gyro = list(generate(small(subjects=1, minutes_per_subject=0.5, channels="gyro")))
    for f, a in zip(full, acc):
        assert a.data.shape == (3, 1500) and np.array_equal(a.data, f.data[:3])
        assert np.array_equal(a.labels, f.labels)
    assert np.array_equal(gyro[0].data, full[0].data[3:])
    prep = PrepareConfig(synthetic=small(subjects=1, minutes_per_subject=0.5, channels="acc"))
    assert open_source(None, prep).channels == ["acc_x", "acc_y", "acc_z"]


@pytest.mark.parametrize("overrides, window, hop, rate, channels, classes", [
    (["window.length_s=2.56", "window.hop_s=1.28"], 128, 64, 50.0, 6, 7),
    (["synthetic.rate=100", "window.rate=100", "window.length_s=10", "window.hop_s=5"], 1000, 500, 100.0, 6, 7),
    (["synthetic.channels=acc"], 250, 125, 50.0, 3, 7),
    (["synthetic.activities=[exercise]", "window.length_s=2.56", "window.hop_s=1.28"], 128, 64, 50.0, 6, 7),
])
def test_prepare_makes_the_matrix_shapes(tmp_path, overrides, window, hop, rate, channels, classes):
    """The settings of benchmarks/ssl_matrix.py's cells, as `wearspec prepare synthetic` takes them."""
    from wearspec.config import load_config

    cfg = load_config(PrepareConfig, None, overrides + ["synthetic.subjects=2", "synthetic.minutes_per_subject=1"])
    store, _ = prepare("synthetic", None, tmp_path / "s", cfg, progress=False)
    assert (store.window, store.hop, store.rate) == (window, hop, rate)
    assert store.n_channels == channels and len(store.label_names) == classes
    assert len(store) == 2 * (1 + (int(60 * rate) - window) // hop)
    x = store.read_batch(np.arange(len(store)))
    assert x.shape == (len(store), channels, window) and np.isfinite(x).all()


@pytest.fixture(scope="module")
def exercise() -> list:
    """6 subjects × 4 min of the exercise set."""
    return list(generate(small(subjects=6, minutes_per_subject=4.0, activities=["exercise"])))


def test_exercise_set_names_labels_and_physics(exercise):
    names = synthetic.activity_names(small(activities=["exercise"]))
    assert names == list(synthetic.EXERCISE_ACTIVITIES) and "rest" in names
    assert synthetic.activity_names(small(activities=["exercise", "walking"]))[-1] == "walking"
    prep = PrepareConfig(synthetic=small(subjects=1, minutes_per_subject=0.5, activities=["exercise"]))
    assert open_source(None, prep).label_names == names
    for r in exercise:
        assert r.data.shape == (6, int(4 * 60 * RATE)) and np.isfinite(r.data).all()
        assert set(np.unique(r.labels)) == set(range(-1, len(names)))
        assert np.linalg.norm(r.data[3:], axis=0).max() < 12.0  # rad/s
        acc = np.linalg.norm(r.data[:3].astype(np.float64), axis=0)
        assert acc.max() < 60.0 and abs(np.median(acc) - GRAVITY) < 1.0


def test_exercise_classes_differ_in_plane_of_motion(exercise):
    """Front and lateral raises share range and radius; only the plane differs, which the gyroscope sees
    on another device axis (what a full 3-D rotation augmentation would erase)."""
    names = list(synthetic.EXERCISE_ACTIVITIES)

    def gyro_axis(activity):
        code = names.index(activity)
        return [int(np.abs(r.data[3:, r.labels == code]).mean(1).argmax()) for r in exercise]

    front, lateral = gyro_axis("front_raise"), gyro_axis("lateral_raise")
    assert sum(f != lt for f, lt in zip(front, lateral)) >= 5, (front, lateral)
    curl = [np.abs(r.data[3:, r.labels == names.index("curl")]).mean() for r in exercise]
    rest = [np.abs(r.data[3:, r.labels == names.index("rest")]).mean() for r in exercise]
    assert np.mean(curl) > 2 * np.mean(rest)


def test_exercise_subjects_differ_in_tempo_and_a_modest_mounting():
    styles = [synthetic_exercise.draw_style(np.random.default_rng([0, 0, k])) for k in range(1, 11)]
    angles = [np.degrees(2 * np.arccos(min(1.0, abs(s.mount[0])))) for s in styles]
    assert max(angles) <= synthetic_exercise.MOUNT_MAX_DEG + 1e-6 and len(set(np.round(angles, 6))) == 10
    assert len({round(s.tempo, 6) for s in styles}) == 10
    # the subject's mounting applies to every bout: the rest bouts' mean gravity direction differs by subject
    recs = list(generate(small(subjects=4, minutes_per_subject=3.0, activities=["exercise"])))
    rest = synthetic.EXERCISE_ACTIVITIES.index("rest")
    dirs = [r.data[:3, r.labels == rest].mean(1) for r in recs]
    assert len({tuple(np.round(d, 3)) for d in dirs}) == 4


def test_bad_channels_and_activity_sets_name_the_key():
    with pytest.raises(WearspecError, match="synthetic.channels"):
        list(generate(small(channels="mag")))
    with pytest.raises(WearspecError, match="unknown activity 'yoga'.*exercise"):
        list(generate(small(activities=["exercise", "yoga"])))
    with pytest.raises(WearspecError, match="'rest' is listed more than once"):
        list(generate(small(activities=["exercise", "rest"])))
