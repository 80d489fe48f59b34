"""The demo report: ``report.md`` and a self-contained ``report.html`` (images inlined), from the run's files.

Every number comes from a file a step wrote: ``steps/*.json``, ``data/summary.json``, the probe and fine-tuning
``report.json`` files (the probe's hold the classical baseline's rows), ``bundle/bundle.json``,
``stream/stream.json`` and ``report/figures.json``. The text is built once as a list of blocks (heading,
paragraph, table, image) and rendered twice. The verdict block at the top (:mod:`wearspec.demo.verdict`) is also
written as ``report/verdict.json``.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from wearspec import __version__
from wearspec.demo.steps import STEPS
from wearspec.demo.verdict import RESAMPLES, Verdict, classical_section, verdicts
from wearspec.utils.io import write_json, write_text


class Doc:
    """Blocks: ("h", level, text), ("p", text), ("table", header, rows), ("img", path, caption)."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", header, [[_cell(c) for c in r] for r in rows]))

    def img(self, path: Path, caption: str) -> None:
        if Path(path).is_file():
            self.blocks.append(("img", Path(path), caption))
        else:
            self.p(f"(figure not written: {Path(path).name})")

    def markdown(self, base: Path) -> str:
        lines: list[str] = []
        for b in self.blocks:
            if b[0] == "h":
                lines += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "table":
                lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(r) + " |" for r in b[2]] + [""]
            else:
                lines += [f"![{b[2]}]({Path(os.path.relpath(b[1], base)).as_posix()})", "", f"*{b[2]}*", ""]
        return "\n".join(lines)

    def html(self, title: str) -> str:
        body: list[str] = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(c)}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            else:
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
        style = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
                 "table{border-collapse:collapse;margin:0.5rem 0 1rem}td,th{border:1px solid #ccc;padding:2px 8px;"
                 "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
                 "figcaption{font-size:0.85rem;color:#555}h2{border-bottom:1px solid #ddd;margin-top:2rem}")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 0.001) else f"{v:.3f}"
    return "–" if v is None else str(v)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _section(doc: Doc, title: str, source: Path) -> dict | None:
    """A level-2 heading and the JSON the section reads (or "not run" when the step wrote none)."""
    doc.h(2, title)
    data = _load(source)
    if not data:
        doc.p("not run")
    return data


def _msd(summary: dict, metric: str) -> str:
    s = summary.get(metric) or {}
    return f"{s['mean']:.3f} ± {s['sd']:.3f}" if s.get("mean") is not None and s.get("sd") is not None else "–"


def _scores_row(name: str, pooled: dict, summary: dict) -> list[Any]:
    return [name, pooled.get("accuracy"), pooled.get("macro_f1"), pooled.get("kappa"), _msd(summary, "macro_f1"),
            _msd(summary, "kappa")]


SCORE_HEADER = ["", "accuracy", "macro-F1", "Cohen's κ", "macro-F1 per subject", "κ per subject"]


def build(out: Path) -> Doc:
    steps = {s: _load(out / "steps" / f"{s}.json") for s in STEPS}
    doc = Doc()
    doc.h(1, "wearspec demo report")
    _verdict(doc, verdicts(out), (_load(out / "report" / "figures.json") or {}).get("subjects") or {})
    data = steps["data"] or {}
    doc.p(f"wearspec {__version__}. Store {data.get('store')}; held-out test subjects "
          f"{', '.join(data.get('test_subjects', []))}; validation subjects {', '.join(data.get('val_subjects', []))} "
          f"(both never seen by pretraining).")
    doc.table(["step", "seconds", "status"],
              [[s, f"{steps[s]['seconds']:.0f}" if steps[s] else None, _status(s, steps[s])]
               for s in STEPS if s != "report"])
    _data(doc, out, data)
    _pretrain(doc, out, steps["pretrain"] or {})
    _probe(doc, out)
    _finetune(doc, out, steps["finetune"] or {})
    _export(doc, out)
    _stream(doc, out)
    _engine(doc, steps["engine"])
    return doc


def _verdict(doc: Doc, items: list[Verdict], subjects: dict) -> None:
    """The conclusions first: one sentence per comparison, then their numbers (module docstring of verdict)."""
    doc.h(2, "Verdict")
    for v in items:
        doc.p(v.sentence)
    doc.table(["comparison", "A", "B", "A − B", "95 % interval", "resampled"],
              [[v.title, v.a, v.b, f"{v.diff.estimate:+.3f} {v.unit}" if v.diff else None,
                f"{v.diff.low:+.3f} … {v.diff.high:+.3f}" if v.diff else None,
                f"{v.diff.n} {v.resampled}" if v.diff else None] for v in items])
    doc.p(f"Macro-F1 differences are means over the test subjects of the per-subject difference; the 95 % "
          f"interval is a bootstrap that resamples test subjects with replacement ({RESAMPLES} times, seeded), so "
          f"with few test subjects it is wide. An interval that holds zero is no clear difference. The best deep "
          f"model is chosen on these same subjects, which favours it. Latency: hop interval − p99 latency, "
          f"predictions resampled.")
    if subjects:
        doc.img(Path(subjects["png"]), f"Macro-F1 of each of the {subjects['subjects']} test subjects under every "
                                       f"model; the bar is the mean")


def _status(step: str, rec: dict | None) -> str:
    if rec is None:
        return "not run"
    return f"skipped: {rec['skipped']}" if rec.get("skipped") else "done"


def _data(doc: Doc, out: Path, d: dict) -> None:
    doc.h(2, "Data")
    summary = _load(out / "data" / "summary.json") or {}
    doc.table(["windows", "labelled", "unlabelled", "pretraining pool", "channels", "rate Hz", "window s", "hop s"],
              [[d.get("windows"), d.get("labelled_windows"), d.get("unlabelled_windows"), d.get("pretrain_windows"),
                ", ".join(d.get("channels", [])), d.get("rate_hz"), d["window_samples"] / d["rate_hz"],
                d["hop_samples"] / d["rate_hz"]]] if d else [])
    doc.table(["subjects", "train", "validation", "test", "unlabelled"],
              [[summary.get("subjects"), len(d.get("train_subjects", [])), len(d.get("val_subjects", [])),
                len(d.get("test_subjects", [])), len(d.get("unlabelled_subjects", []))]])
    doc.table(["label", "windows"], [[k, v] for k, v in (summary.get("per_label") or {}).items()])
    doc.img(out / "data" / "spectrograms.png", "Example spectrograms per class (log |STFT|, channels stacked)")


def _pretrain(doc: Doc, out: Path, p: dict) -> None:
    doc.h(2, "Self-supervised pretraining (EsViT/DINO)")
    last = p.get("last", {})
    doc.p(f"{p.get('command', '')}: {p.get('nproc')} processes ({p.get('backend')}, {p.get('device')}), "
          f"{p.get('steps')} steps.")
    doc.table(["step", "loss", "teacher entropy", "KL to uniform", "LR", "windows/s"],
              [[last.get("step"), last.get("loss"), last.get("entropy"), last.get("kl_uniform"), last.get("lr"),
                last.get("windows_per_s")]] if last else [])
    doc.img(out / "pretrain" / "curves.png", "Pretraining curves: loss, teacher entropy, learning rate")


def _probe(doc: Doc, out: Path) -> None:
    doc.h(2, "Linear probe and k-NN on held-out subjects, beside the classical baseline")
    rows = []
    for which, name in (("teacher", "SSL teacher"), ("random", "random init")):
        rep = _load(out / "probe" / which / "report.json")
        for m, mname in (("linear", "linear probe"), ("knn", f"k-NN (k={rep['knn'].get('k')})" if rep else "k-NN")):
            if rep:
                rows.append(_scores_row(f"{name}, {mname}", rep[m]["pooled"], rep[m]["subject_summary"]))
    classical = classical_section(out)
    for m in (classical or {}).get("models", []):
        rows.append(_scores_row(f"classical baseline, {classical['labels'][m]}", classical[m]["pooled"],
                                classical[m]["subject_summary"]))
    doc.table(SCORE_HEADER, rows)
    if classical:
        doc.p(f"Classical baseline: {classical['features']['count']} hand-crafted features per window (per-channel "
              f"statistics, percentiles, band powers, magnitudes, correlations) with logistic regression and a "
              f"random forest, fitted on the same training subjects and scored on the same test subjects; deep "
              f"features are worth their cost where they beat these rows.")
    else:
        doc.p("Classical baseline: not run (probe.classical.enabled=false).")
    doc.img(out / "probe" / "teacher" / "confusion_linear.png", "Linear probe of the SSL teacher: confusion matrix")
    fig = _load(out / "report" / "figures.json") or {}
    emb = fig.get("embedding") or {}
    if emb:
        doc.img(Path(emb["png"]), f"PCA of the probe features of {emb['windows']} held-out windows, by class")
    att = fig.get("attention") or {}
    if att.get("png"):
        doc.img(Path(att["png"]), f"Attention of the class token in the last block (heads averaged); the largest "
                                  f"token takes on average {att['peak_share_mean']:.2f} of the patch attention")
    elif att:
        doc.p(f"Attention maps: {att.get('skipped')}")
    reg = fig.get("region") or {}
    if reg:
        doc.table(["two time crops, shifted by", "overlapping tokens", "consistent matches: SSL teacher",
                   "random init", "chance"],
                  [[f"{reg['shift_frames']} frames", reg["overlap_tokens"], reg["consistent_teacher"],
                    reg["consistent_random"], reg["chance"]]])
        doc.img(Path(reg["png"]), "Region correspondence: each token of crop B matched to its most similar token "
                                  "of crop A (the EsViT region-loss matching)")


def _finetune(doc: Doc, out: Path, f: dict) -> None:
    rep = _section(doc, "Fine-tuning: CNN teacher → distilled transformer student (DeSepTr)",
                   out / "finetune" / "report.json")
    if not rep:
        return
    cfg = rep.get("config", {})
    model = cfg.get("student", {}).get("model", {})
    names = {"teacher": f"CNN teacher (ResNet-18, width {cfg.get('teacher', {}).get('cnn', {}).get('width')})",
             "student": f"{model.get('arch')} student ({model.get('backbone', {}).get('name')}, SSL init, "
                        f"{cfg.get('student', {}).get('distill', {}).get('kind')} distillation)"}
    doc.table(SCORE_HEADER, [_scores_row(names.get(k, k), v["pooled"], v["subject_summary"])
                             for k, v in rep["stages"].items()])
    for stage in rep["stages"]:
        doc.img(out / "finetune" / f"confusion_{stage}.png", f"{names.get(stage, stage)}: confusion matrix")
    if f.get("student"):
        doc.img(Path(f["student"]) / "curves.png", "Student training curves")


def _export(doc: Doc, out: Path) -> None:
    b = _section(doc, "Export: ONNX bundle (front end inside), INT8, parity", out / "bundle" / "bundle.json")
    if not b:
        return
    files = [(n, (out / "bundle" / n).stat().st_size / 1e6) for n in ("model.onnx", "model.int8.onnx")
             if (out / "bundle" / n).is_file()]
    doc.p(f"opset {b['onnx']['opset']}, ops checked against TensorRT {b['onnx']['trt_version_checked']}; "
          + ", ".join(f"{n} {mb:.2f} MB" for n, mb in files) + ".")
    doc.table(["parity (PyTorch vs ONNX Runtime)", "max abs", "max rel", "argmax agreement", "passed"],
              [[k, v.get("max_abs"), v.get("max_rel"), v.get("argmax_agreement"), v.get("passed")]
               for k, v in b["parity"].items() if isinstance(v, dict) and "max_abs" in v])
    fp16 = b.get("fp16") or {}
    if fp16:
        acc = fp16.get("accuracy") or {}
        doc.table(["FP16 check", "largest |activation|", "FP16 max", "argmax agreement", "accuracy FP32", "FP16"],
                  [[fp16.get("source"), ((fp16.get("max_abs_activation") or {}).get("model") or {}).get("value"),
                    fp16.get("fp16_max"), fp16.get("argmax_agreement"), acc.get("fp32"), acc.get("fp16")]])
    acc = (b.get("int8") or {}).get("accuracy") or {}
    if acc.get("fp32"):
        doc.table(["INT8 (ONNX Runtime, held-out)", "windows", "accuracy", "macro-F1", "κ"],
                  [[name, acc["windows"], acc[k]["accuracy"], acc[k]["macro_f1"], acc[k]["kappa"]]
                   for k, name in (("fp32", "FP32"), ("int8", "INT8 Q/DQ"))])
        doc.p(f"INT8 macro-F1 change: {-acc['macro_f1_drop']:+.3f}; argmax agreement with FP32 "
              f"{acc['argmax_agreement']:.3f}.")


def _stream(doc: Doc, out: Path) -> None:
    s = _section(doc, "Streaming a held-out recording", out / "stream" / "stream.json")
    if not s:
        return
    lat = s["latency"]
    doc.p(f"Recording {s['recording']}: {s['samples']} samples replayed from CSV, one prediction per hop "
          f"(smoothing {s['smoothing']}), ONNX Runtime FP32 backend.")
    doc.table(["predictions", "agree with batch", "accuracy vs labels", "latency p50 ms", "p99 ms", "mean ms",
               "max ms"], [[s["predictions"], s["agreement_with_batch"], s["accuracy_vs_labels"], lat["p50_ms"],
                            lat["p99_ms"], lat["mean_ms"], lat["max_ms"]]])


def _engine(doc: Doc, e: dict | None) -> None:
    doc.h(2, "TensorRT engine")
    if not e:
        doc.p("not run")
    elif not e.get("built"):
        doc.p(f"Skipped: {e.get('skipped')}.")
    else:
        meta = e.get("engine", {})
        doc.p(f"Built with TensorRT {meta.get('tensorrt')} for {meta.get('gpu')}, precision "
              f"{meta.get('precision')}.")
        rows = e.get("bench", [])
        keys = [k for k in (rows[0] if rows else {}) if isinstance(rows[0][k], (int, float))]
        doc.table(keys, [[r.get(k) for k in keys] for r in rows])


def write_report(out: str | os.PathLike) -> dict[str, Path]:
    """Write ``out/report/report.md``, ``report.html`` and ``verdict.json`` (atomic) → the report's paths."""
    out = Path(out)
    folder = out / "report"
    doc = build(out)
    write_json(folder / "verdict.json", [v.to_dict() for v in verdicts(out)])
    write_text(folder / "report.md", doc.markdown(folder))
    write_text(folder / "report.html", doc.html("wearspec demo report"))
    return {"markdown": folder / "report.md", "html": folder / "report.html"}
