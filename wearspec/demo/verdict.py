"""The verdict at the top of the demo report: seven verdicts in five groups, each a difference with a 95 % interval
and one plain sentence, so a reader learns what the run showed without comparing table rows.

1. **SSL vs random init** (linear probe, then k-NN): the pretrained teacher's features against the same backbone
   randomly initialised — did pretraining help? Then the label-efficiency point: the same two linear probes
   fitted on 10 % of the training labels (``probe.few_labels``), where pretraining is meant to pay most.
2. **Best deep model vs the classical baseline**: the best of the probes and the fine-tuned models against the
   best classical model (hand-crafted features + logistic regression / random forest). "Best" on each side is
   chosen by the mean over these same test subjects, which favours the deep side (more candidates): if the
   classical baseline still wins, it beat every deep model here.
3. **Student vs teacher**: the distilled transformer against its CNN teacher.
4. **INT8 vs FP32**: the exported model's Q/DQ graph against its FP32 graph (ONNX Runtime).
5. **Streaming latency**: the headroom, hop interval − p99 latency of the stream's inference calls (ms): a
   stream keeps up while it is positive.

Differences 1–4 are in macro-F1 per test subject, paired: for the subjects S scored by both sides,
``d_s = score_A(s) − score_B(s)`` and the estimate is the mean of ``d_s``. The interval is a percentile
bootstrap over *subjects*: ``resamples`` times, draw |S| subjects with replacement (seeded) and take the mean of
their ``d``; the 2.5th and 97.5th percentiles of those means bound it. Windows of one subject are not
independent, so subjects, not windows, are the unit of resampling. With few test subjects the interval is wide,
and with one it is a single point: it says what these subjects show, not what holds in general. The latency
interval resamples the stream's predictions (one recording) instead.

Every number is read from the files the steps wrote: the probe and fine-tuning ``report.json`` (their
``per_subject`` entries, :func:`wearspec.evaluate.metrics.classification_report`), ``steps/export.json`` (FP32
and INT8 reports per subject) and ``stream/stream.json`` (per-prediction latencies and the hop).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
METRIC = "macro_f1"


@dataclass
class Difference:
    """A − B with its bootstrap interval; ``n`` units (subjects or predictions) were resampled."""

    estimate: float
    low: float
    high: float
    n: int
    resamples: int

    @property
    def sign(self) -> int:
        """+1 when the whole interval lies above 0, −1 below, 0 when it holds 0 (no clear difference)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def subject_scores(report: dict, metric: str = METRIC) -> dict[str, float]:
    """``{subject: score}`` from a classification report's ``per_subject`` entries (finite scores only)."""
    out = {}
    for subject, scores in (report.get("per_subject") or {}).items():
        v = scores.get(metric)
        if v is not None and math.isfinite(v):
            out[str(subject)] = float(v)
    return out


def bootstrap(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL,
                   stat=np.mean) -> Difference:
    """``stat`` of ``values`` (n,) with a percentile-bootstrap interval: ``resamples`` draws of n values with
    replacement from a ``numpy.random.default_rng(seed)``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap of no values")
    rng = np.random.default_rng(seed)
    draws = stat(v[rng.integers(0, v.size, size=(resamples, v.size))], axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Difference(float(stat(v)), float(low), float(high), int(v.size), resamples)


def paired_difference(a: dict[str, float], b: dict[str, float], resamples: int = RESAMPLES,
                      seed: int = SEED) -> Difference | None:
    """Mean over the subjects in both of ``a[s] − b[s]``, with the subject bootstrap; None if none is shared."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return bootstrap(np.array([a[s] - b[s] for s in common]), resamples, seed)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def deep_models(out: Path) -> dict[str, dict]:
    """The deep models the run scored on its test subjects: ``{display name: classification report}``."""
    models = {}
    for which, name in (("teacher", "SSL teacher"), ("random", "random init")):
        rep = _load(out / "probe" / which / "report.json") or {}
        for m, mname in (("linear", "linear probe"), ("knn", "k-NN"), ("linear_few", "linear probe, few labels")):
            if m in rep:
                models[f"{name}, {mname}"] = rep[m]
    stages = (_load(out / "finetune" / "report.json") or {}).get("stages", {})
    for stage, name in (("teacher", "fine-tuned CNN teacher"), ("student", "distilled student")):
        if stage in stages:
            models[name] = stages[stage]
    return models


def classical_section(out: Path) -> dict | None:
    """The classical baseline's section of the probe reports (the demo writes it into the teacher's; any probe
    report that holds one will do), or None when it was turned off."""
    for which in ("teacher", "random"):
        c = (_load(Path(out) / "probe" / which / "report.json") or {}).get("classical")
        if c and c.get("enabled"):
            return c
    return None


def classical_models(out: Path) -> dict[str, dict]:
    """``{display name: classification report}`` of the classical baseline's models (empty when off)."""
    c = classical_section(out) or {}
    return {c["labels"][m]: c[m] for m in c.get("models", [])}


def _best(models: dict[str, dict]) -> str | None:
    """The name of the model with the highest mean per-subject score (ties: the first), None if none is scored."""
    means = {k: np.mean(list(v.values())) for k, v in ((k, subject_scores(r)) for k, r in models.items()) if v}
    return max(means, key=means.get) if means else None


# -- the comparisons and their sentences ---------------------------------------------------------------------

# kind → (A clearly above B, A clearly below B, no clear difference); {a}, {b} name the sides, {est} is the
# signed estimate A − B, {size} its magnitude, {hop} the stream's hop interval in ms
SENTENCES = {
    "ssl": ("Pretraining helped on these subjects: {a} beat {b} by {size} macro-F1.",
            "Pretraining did not help on these subjects: {b} beat {a} by {size} macro-F1.",
            "Pretraining made no clear difference on these subjects: {a} vs {b} is {est} macro-F1, and the "
            "interval holds zero."),
    "classical": ("Deep learning beat features here: {a} beat the classical baseline ({b}) by {size} macro-F1.",
                  "The classical baseline beat every deep model here: {b} beat the best of them, {a}, by {size} "
                  "macro-F1.",
                  "No clear winner between deep models and the classical baseline here: the best deep model, {a}, "
                  "vs {b} is {est} macro-F1, and the interval holds zero."),
    "student": ("The distilled student beat its CNN teacher on these subjects by {size} macro-F1.",
                "The distilled student fell short of its CNN teacher on these subjects by {size} macro-F1.",
                "The distilled student matched its CNN teacher on these subjects: {est} macro-F1, and the interval "
                "holds zero."),
    "int8": ("INT8 scored above FP32 on these subjects by {size} macro-F1 (rounding luck, not a gain to count on).",
             "INT8 cost {size} macro-F1 on these subjects.",
             "INT8 made no clear difference on these subjects: {est} macro-F1, and the interval holds zero."),
    "latency": ("Streaming keeps up: the p99 inference latency leaves {size} ms of the {hop} ms hop.",
                "Streaming falls behind: the p99 inference latency exceeds the {hop} ms hop by {size} ms.",
                "Streaming is at its limit: the p99 inference latency is the {hop} ms hop within its interval."),
}


@dataclass
class Verdict:
    """One comparison: ``a`` − ``b`` in ``unit`` (``diff`` None: not measured, ``sentence`` says why)."""

    kind: str
    title: str
    a: str
    b: str
    unit: str
    resampled: str  # what the bootstrap resampled: "subjects" | "predictions"
    diff: Difference | None
    sentence: str

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.diff is not None:
            d["diff"]["sign"] = self.diff.sign
        return d


def sentence(kind: str, diff: Difference, a: str, b: str, hop_ms: float | None = None) -> str:
    """The plain sentence of ``kind`` (a key of :data:`SENTENCES`) for the sign of ``diff``'s interval."""
    above, below, unclear = SENTENCES[kind]
    digits = 1 if kind == "latency" else 3
    text = {1: above, -1: below, 0: unclear}[diff.sign]
    return text.format(a=a, b=b, est=f"{diff.estimate:+.{digits}f}", size=f"{abs(diff.estimate):.{digits}f}",
                       hop=f"{hop_ms:.0f}" if hop_ms is not None else "?")


def compare(kind: str, title: str, a: tuple[str, dict | None], b: tuple[str, dict | None],
            resamples: int = RESAMPLES, seed: int = SEED) -> Verdict:
    """A paired subject-level comparison of two classification reports (None: that side was not run)."""
    (na, ra), (nb, rb) = a, b
    missing = [n for n, r in ((na, ra), (nb, rb)) if not r]
    diff = None if missing else paired_difference(subject_scores(ra), subject_scores(rb), resamples, seed)
    if diff is None:
        why = f"{' and '.join(missing)} not run" if missing else "no test subject scored by both"
        return Verdict(kind, title, na, nb, "macro-F1", "subjects", None, f"{title}: not measured ({why}).")
    return Verdict(kind, title, na, nb, "macro-F1", "subjects", diff, sentence(kind, diff, na, nb))


def latency_verdict(stream: dict | None, resamples: int = RESAMPLES, seed: int = SEED) -> Verdict:
    """Headroom = hop interval − p99 latency (ms) of the stream's inference calls, predictions resampled."""
    title, a, b = "Streaming latency", "hop interval", "p99 inference latency"
    lat = (stream or {}).get("latencies_ms") or []
    hop = (stream or {}).get("hop_ms")
    if not lat or hop is None:
        why = "no stream run" if not stream else "stream.json holds no per-prediction latencies"
        return Verdict("latency", title, a, b, "ms", "predictions", None, f"{title}: not measured ({why}).")

    def headroom(x: np.ndarray, axis=None) -> np.ndarray:
        return hop - np.percentile(x, 99, axis=axis)

    diff = bootstrap(np.asarray(lat, dtype=np.float64), resamples, seed, stat=headroom)
    return Verdict("latency", title, a, b, "ms", "predictions", diff, sentence("latency", diff, a, b, hop))


def verdicts(out: Path, resamples: int = RESAMPLES, seed: int = SEED) -> list[Verdict]:
    """The seven verdicts of a demo folder ``out`` (module docstring), from the files its steps wrote."""
    out = Path(out)
    deep, classical = deep_models(out), classical_models(out)
    result = [compare("ssl", f"SSL vs random init ({m})", (f"SSL teacher, {m}", deep.get(f"SSL teacher, {m}")),
                      (f"random init, {m}", deep.get(f"random init, {m}")), resamples, seed)
              for m in ("linear probe", "k-NN")]
    few = deep.get("SSL teacher, linear probe, few labels") or {}
    pct = f"{few.get('fraction', 0.1):.0%}"
    result.append(compare("ssl", f"SSL vs random init (linear probe on {pct} of the labels)",
                          (f"SSL teacher, linear probe on {pct} of the labels", few or None),
                          (f"random init, linear probe on {pct} of the labels",
                           deep.get("random init, linear probe, few labels")), resamples, seed))
    best_deep, best_classical = _best(deep), _best(classical)
    result.append(compare("classical", "Best deep model vs the classical baseline",
                          (best_deep or "deep models", deep.get(best_deep)),
                          (best_classical or "classical baseline", classical.get(best_classical)), resamples, seed))
    result.append(compare("student", "Student vs teacher", ("distilled student", deep.get("distilled student")),
                          ("fine-tuned CNN teacher", deep.get("fine-tuned CNN teacher")), resamples, seed))
    held = (_load(out / "steps" / "export.json") or {}).get("held_out") or {}
    result.append(compare("int8", "INT8 vs FP32", ("INT8", held.get("int8")), ("FP32", held.get("fp32")),
                          resamples, seed))
    result.append(latency_verdict(_load(out / "stream" / "stream.json"), resamples, seed))
    return result
