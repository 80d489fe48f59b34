"""The classical baseline: hand-crafted window features with logistic regression and a random forest.

Deep features have to beat this to be worth their cost: on real wrist-IMU data a random forest on
features like these can beat every deep probe. Every evaluation (probe, fine-tuning, demo) runs it on
the *same* subject-wise splits with the same metrics, so a report shows at a glance whether deep
learning beat features on the user's data.

Features (:func:`window_features`), for every *signal*: each raw channel, then each magnitude signal
(the Euclidean norm of a 3-axis sensor: the x/y/z triads that the channel names reveal, as
:func:`wearspec.data.augment.triads_from_channels` finds them, e.g. ``|acc|`` and ``|gyro|``; with no
triad in the names and a channel count that is a multiple of 3, each consecutive triple; otherwise none):

==================  ==========================================================================
``mean``, ``sd``    mean and SD (population, ddof 0) over the window
``min``, ``max``    extremes
``p5`` … ``p95``    percentiles 5, 25, 50, 75, 95 (linear interpolation, as ``np.percentile``)
``iqr``             p75 − p25
``mad_diff``        mean absolute first difference, mean |x[t+1] − x[t]| (units per sample)
``zcr``             zero-crossing rate of the de-meaned signal: the fraction of the T − 1 neighbouring
                    pairs whose product is negative
``dom_freq``        frequency (Hz) of the strongest non-DC periodogram bin
``dom_share``       that bin's share of the total power
``band_LO-HIHz``    log band power ``log(1 + P / 1e-6)``: P is the one-sided periodogram power of the
                    de-meaned window (no taper) summed over the bins LO ≤ f < HI (the last band includes
                    Nyquist); the bins of all bands sum to the variance. Edges 0, 0.5, 1, 2, 4, 8, 16 …
                    Hz doubling up to Nyquist; a band that holds no non-DC bin at this rate and
                    window length is left out. ``log1p`` is 0 for no power, ≈ log P + 13.8 above 1e-6.
==================  ==========================================================================

and the cross-channel correlations ``corr:A,B`` (Pearson over the window, upper triangle, raw channels
only) when there are 2 … 12 channels. A constant signal has 0 for every feature that would divide by
its spread (``sd``, ``zcr``, ``dom_*``, ``band_*``, its correlations), never NaN. Features are
computed in float64, vectorised over a chunk of windows at a time (bounded memory for 10⁵+ windows),
and returned as float32. Feature names are ``SIGNAL:STAT`` (``acc_x:p95``, ``|acc|:band_1-2Hz``).

Models (:func:`classical_baseline`), per split: fitted on the training subjects' windows only;
logistic regression (standardised features, L2, ``C`` from ``logreg_cs`` chosen on the validation
subjects' macro-F1; without validation windows ``C = 1``) and a random forest (``n_trees`` trees, fixed
``random_state``; nothing to choose, its validation macro-F1 is reported). Test windows are predicted
last. With k folds or leave-one-subject-out the test predictions of all folds are pooled, as the
probe does, into one :func:`~wearspec.evaluate.metrics.classification_report` per model.
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from wearspec.config import to_dict
from wearspec.data.augment import triads_from_channels
from wearspec.data.splits import Split
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.evaluate.metrics import classification_report, macro_f1

PERCENTILES = (5, 25, 50, 75, 95)
SIGNAL_STATS = ("mean", "sd", "min", "max", *(f"p{q}" for q in PERCENTILES), "iqr", "mad_diff", "zcr",
                "dom_freq", "dom_share")
POWER_FLOOR = 1e-6  # units²: band powers are log(1 + P / floor)
MAX_CORR_CHANNELS = 12
CHUNK_VALUES = 1 << 22  # float64 values of one chunk's signals (32 MB; a few temporaries of that size at once)
MODELS = {"logreg": "features+LR", "forest": "features+RF"}  # key → row label in report tables


@dataclass
class ClassicalConfig:
    """The classical baseline beside every evaluation: hand-crafted features + logistic regression / forest."""

    enabled: bool = True  # false: no baseline rows
    models: list[str] = field(default_factory=lambda: ["logreg", "forest"])  # logreg | forest
    logreg_cs: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])  # inverse L2 strength, chosen on val
    n_trees: int = 300  # random-forest trees
    min_samples_leaf: int = 1  # random-forest leaves (raise it for very many windows: smaller, faster trees)
    n_jobs: int = 2  # forest cores (-1: all)
    chunk: int = 4096  # windows read from the store at a time (features are computed in ≤ 32 MB pieces of them)

    def validate(self) -> None:
        bad = [m for m in self.models if m not in MODELS]
        if bad or not self.models:
            raise WearspecError(
                f"classical.models: expected a non-empty list of {', '.join(MODELS)}, got {self.models}")
        if not self.logreg_cs or any(not c > 0 for c in self.logreg_cs):
            raise WearspecError(f"classical.logreg_cs: expected a non-empty list of numbers > 0, got {self.logreg_cs}")
        for name in ("n_trees", "min_samples_leaf", "chunk"):
            if getattr(self, name) < 1:
                raise WearspecError(f"classical.{name}: expected ≥ 1, got {getattr(self, name)}")
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise WearspecError(f"classical.n_jobs: expected ≥ 1 or -1 (all cores), got {self.n_jobs}")


# -- features ------------------------------------------------------------------------------------


def magnitude_groups(channels: Sequence[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """``[(name, (i_x, i_y, i_z)), ...]``: the 3-axis sensors whose norm is a magnitude signal.

    Triads from the channel names (``acc_x, acc_y, acc_z`` → ``|acc|``; bare ``x, y, z`` → ``|xyz|``);
    with none found and C a multiple of 3, each consecutive triple (``|c0,c1,c2|``); else none."""
    names = [str(c) for c in channels]
    triads = triads_from_channels(names)
    if triads:
        stems = [re.sub(r"[_\-.\s:/]?[xX]$", "", names[t[0]]) for t in triads]
        return [(f"|{s or 'xyz'}|", t) for s, t in zip(stems, triads)]
    if names and len(names) % 3 == 0:
        return [(f"|{','.join(names[i:i + 3])}|", (i, i + 1, i + 2)) for i in range(0, len(names), 3)]
    return []


def band_edges(rate: float, window: int) -> list[tuple[float, float]]:
    """The (lo, hi) Hz bands that hold at least one non-DC periodogram bin of a ``window``-sample window."""
    nyq = rate / 2
    edges = [0.0, 0.5]
    while edges[-1] * 2 < nyq:
        edges.append(edges[-1] * 2)
    edges = [e for e in edges if e < nyq] + [nyq]
    freqs = np.fft.rfftfreq(window, 1.0 / rate)[1:]
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (freqs >= lo) & ((freqs < hi) | ((hi == nyq) & (freqs <= hi)))
        if inside.any():
            bands.append((lo, hi))
    return bands


def feature_names(channels: Sequence[str], rate: float, window: int) -> list[str]:
    """The names of :func:`window_features`' columns, in order."""
    signals = [str(c) for c in channels] + [n for n, _ in magnitude_groups(channels)]
    stats = list(SIGNAL_STATS) + [f"band_{lo:g}-{hi:g}Hz" for lo, hi in band_edges(rate, window)]
    names = [f"{s}:{k}" for s in signals for k in stats]
    c = len(channels)
    if 2 <= c <= MAX_CORR_CHANNELS:
        i, j = np.triu_indices(c, 1)
        names += [f"corr:{channels[a]},{channels[b]}" for a, b in zip(i.tolist(), j.tolist())]
    return names


def _signal_stats(s: np.ndarray, rate: float, bands: list[tuple[float, float]]) -> np.ndarray:
    """Signals (n, S, T) float64 → (n, S, len(SIGNAL_STATS) + len(bands)), columns as in the module docstring."""
    t = s.shape[-1]
    mean = s.mean(-1)
    d = s - mean[..., None]
    mn, mx = s.min(-1), s.max(-1)
    flat = mx == mn  # constant: everything that divides by the spread is 0
    pct = np.percentile(s, PERCENTILES, axis=-1)  # (5, n, S)
    mad = np.abs(np.diff(s, axis=-1)).mean(-1) if t > 1 else np.zeros_like(mean)
    zcr = (d[..., :-1] * d[..., 1:] < 0).mean(-1) if t > 1 else np.zeros_like(mean)
    spec = np.abs(np.fft.rfft(d, axis=-1)) ** 2 / (t * t)
    spec[..., 1:(t + 1) // 2] *= 2  # one-sided: every bin but DC (and Nyquist for even T) twice
    spec[..., 0] = 0.0
    freqs = np.fft.rfftfreq(t, 1.0 / rate)
    total = spec.sum(-1)
    k = spec[..., 1:].argmax(-1) + 1 if spec.shape[-1] > 1 else np.zeros(mean.shape, np.int64)
    dom_freq = freqs[k]
    dom_share = np.take_along_axis(spec, k[..., None], -1)[..., 0] / np.where(total > 0, total, 1.0)
    nyq = rate / 2
    band = [np.log1p(spec[..., (freqs >= lo) & ((freqs < hi) | ((hi == nyq) & (freqs <= hi)))].sum(-1) / POWER_FLOOR)
            for lo, hi in bands]
    out = np.stack([mean, np.sqrt((d * d).mean(-1)), mn, mx, *pct, pct[3] - pct[1], mad, zcr, dom_freq, dom_share,
                    *band], axis=-1)
    out[..., 1][flat] = 0.0
    out[..., 11:][flat] = 0.0
    return out


def _correlations(x: np.ndarray) -> np.ndarray:
    """Windows (n, C, T) float64 → (n, C·(C−1)/2) Pearson correlations of the channel pairs i < j."""
    d = x - x.mean(-1, keepdims=True)
    cov = np.einsum("nct,ndt->ncd", d, d)
    sd = np.sqrt(np.einsum("ncc->nc", cov))
    sd = np.where(x.max(-1) == x.min(-1), 0.0, sd)
    denom = sd[:, :, None] * sd[:, None, :]
    corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
    i, j = np.triu_indices(x.shape[1], 1)
    return np.clip(corr[:, i, j], -1.0, 1.0)


def _features_chunk(x: np.ndarray, rate: float, groups, bands) -> np.ndarray:
    x = x.astype(np.float64)
    signals = [x] + [np.sqrt((x[:, list(g)] ** 2).sum(1))[:, None] for _, g in groups]
    s = np.concatenate(signals, axis=1)
    parts = [_signal_stats(s, rate, bands).reshape(len(x), -1)]
    if 2 <= x.shape[1] <= MAX_CORR_CHANNELS:
        parts.append(_correlations(x))
    return np.concatenate(parts, axis=1).astype(np.float32)


def window_features(x: np.ndarray, rate: float, channels: Sequence[str],
                    chunk: int = 4096) -> tuple[np.ndarray, list[str]]:
    """Hand-crafted features of raw windows (module docstring): x (N, C, T) float16/float32 →
    (features (N, F) float32, names: F strings). At most ``chunk`` windows are processed at a time, fewer
    for long windows, so that a chunk's signals hold at most ``CHUNK_VALUES`` float64 values."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1] != len(channels) or x.shape[2] < 2:
        raise WearspecError(f"window_features: expected windows (N, {len(channels)}, T ≥ 2) for channels "
                            f"{list(channels)}, got shape {x.shape}")
    if not rate > 0:
        raise WearspecError(f"window_features: expected a sampling rate > 0 Hz, got {rate}")
    groups, bands = magnitude_groups(channels), band_edges(rate, x.shape[2])
    names = feature_names(channels, rate, x.shape[2])
    out = np.empty((x.shape[0], len(names)), np.float32)
    step = max(1, min(int(chunk), CHUNK_VALUES // ((x.shape[1] + len(groups)) * x.shape[2])))
    for a in range(0, x.shape[0], step):
        part = x[a:a + step]
        if not np.isfinite(part).all():
            bad = a + int(np.flatnonzero(~np.isfinite(part).reshape(len(part), -1).all(1))[0])
            raise WearspecError(f"window_features: window {bad} holds NaN/Inf; expected finite values")
        out[a:a + len(part)] = _features_chunk(part, rate, groups, bands)
    return out, names


def store_features(store: WindowStore, indices: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, list[str]]:
    """:func:`window_features` of the store windows ``indices``, read ``chunk`` at a time: ((N, F), names)."""
    idx = np.asarray(indices, dtype=np.int64)
    names = feature_names(store.channels, store.rate, store.window)
    out = np.empty((idx.size, len(names)), np.float32)
    for a in range(0, idx.size, chunk):
        out[a:a + chunk] = window_features(store.read_batch(idx[a:a + chunk]), store.rate, store.channels, chunk)[0]
    return out, names


# -- models --------------------------------------------------------------------------------------


def fit_model(model: str, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
              cfg: ClassicalConfig, seed: int = 0):
    """Fit ``model`` (``logreg`` | ``forest``) on training rows; validation rows choose ``C`` (logreg) only.

    Takes no test rows. Returns (fitted estimator with ``predict``, selection dict)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    has_val = val_y.size > 0
    if model == "forest":
        est = RandomForestClassifier(n_estimators=cfg.n_trees, min_samples_leaf=cfg.min_samples_leaf,
                                     n_jobs=cfg.n_jobs, random_state=seed).fit(train_x, train_y)
        score = macro_f1(val_y, est.predict(val_x)) if has_val else float("nan")
        return est, {"n_trees": cfg.n_trees, "val_macro_f1": score}
    best, sweep = None, []
    for c in (cfg.logreg_cs if has_val else [1.0]):
        # one BLAS thread: the (N, F) @ (F, K) products are small, and threads that wait for busy cores
        # made these fits ~7× slower on a shared 2-core machine
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)  # the last iterate is still a fine baseline
            est = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(train_x, train_y)
        score = macro_f1(val_y, est.predict(val_x)) if has_val else float("nan")
        sweep.append({"C": c, "val_macro_f1": score})
        if best is None or score > best[1]:  # ties: the first (strongest regularisation)
            best = (est, score, c)
    return best[0], {"C": best[2], "selected_on": "val" if has_val else "default", "val_macro_f1": best[1],
                     "sweep": sweep}


def classical_baseline(store: WindowStore, splits: Sequence[Split], cfg: ClassicalConfig, seed: int = 0,
                       *, verbose: bool = False) -> dict:
    """The classical baseline on the given subject-wise ``splits`` (store window indices, as
    :func:`wearspec.data.splits.make_splits` returns them); see the module docstring.

    Returns ``{"enabled": False}`` when ``cfg.enabled`` is false, else::

        {"enabled": True, "models": ["logreg", "forest"], "labels": {"logreg": "features+LR", ...},
         "features": {"count": F, "windows": N, "names": [...], "seconds": s},
         "logreg": classification_report(...) + {"selection": [{"split", "C", "selected_on",
                                                                "val_macro_f1", "sweep"}]},
         "forest": classification_report(...) + {"selection": [{"split", "n_trees", "val_macro_f1"}]},
         "splits": [{"name": split name, "logreg": pooled scores, "forest": pooled scores}],
         "seed": seed, "config": the ClassicalConfig as a dict}

    Each model's report pools the test windows of all splits (every subject once with k-fold/LOSO).
    """
    cfg.validate()
    if not cfg.enabled:
        return {"enabled": False}
    if not store.has_labels:
        raise WearspecError(f"{store.path}: the classical baseline needs a labelled store")
    needed = np.unique(np.concatenate([np.concatenate([s.train, s.val, s.test]) for s in splits]))
    t0 = time.perf_counter()
    feats, names = store_features(store, needed, cfg.chunk)
    seconds = time.perf_counter() - t0
    labels = store.labels[needed].astype(np.int64)
    pred = {m: [] for m in cfg.models}
    selection = {m: [] for m in cfg.models}
    fold_scores = []
    for sp in splits:
        tr, va, te = (np.searchsorted(needed, getattr(sp, k)) for k in ("train", "val", "test"))
        fold = {"name": sp.name}
        if np.unique(labels[tr]).size < 2:
            raise WearspecError(f"split {sp.name}: the training subjects' windows hold fewer than 2 classes; the "
                                "classical baseline needs 2+ (or set classical.enabled=false)")
        for m in cfg.models:
            est, sel = fit_model(m, feats[tr], labels[tr], feats[va], labels[va], cfg, seed)
            p = est.predict(feats[te]).astype(np.int64)  # test rows meet the model only here, after selection
            pred[m].append(p)
            selection[m].append({"split": sp.name, **sel})
            fold[m] = classification_report(labels[te], p, store.subjects[sp.test], store.label_names,
                                            store.subject_names)["pooled"]
        fold_scores.append(fold)
    test = np.concatenate([sp.test for sp in splits])
    result = {"enabled": True, "models": list(cfg.models), "labels": {m: MODELS[m] for m in cfg.models},
              "features": {"count": len(names), "windows": int(needed.size), "names": names, "seconds": seconds}}
    for m in cfg.models:
        result[m] = classification_report(store.labels[test], np.concatenate(pred[m]), store.subjects[test],
                                          store.label_names, store.subject_names)
        result[m]["selection"] = selection[m]
    result.update(splits=fold_scores, seed=seed, config=to_dict(cfg))
    if verbose:
        print(f"classical features: {needed.size} windows × {len(names)} features ({seconds:.1f} s)")
    return result
