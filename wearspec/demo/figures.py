"""The demo report's model figures: attention maps, EsViT region correspondence, embedding plot, and the
per-subject scores of every model.

Each function draws one PNG and returns the numbers it measured; :func:`make_figures` collects them into
``report/figures.json``, from which the report reads them.

* **Attention** (ViT): the class token's attention over the patch tokens in the last block, averaged over
  heads — (h, w) on the token grid, drawn over the (channel-mean) normalised spectrogram.
* **Region correspondence**: two overlapping time crops A = frames [0, N − s) and B = [s, N) of one window;
  every token of B is matched to its most similar token of A by cosine similarity of the backbone's token
  features (the EsViT region-loss matching). A match is *consistent* when it lands within one token (time and
  frequency) of the same absolute position; the rate over held-out windows is reported for the pretrained
  teacher and for the random-init backbone, with the chance rate.
* **Subjects**: macro-F1 of each test subject under every model (probes, fine-tuned models, the classical
  baseline), the per-subject spread behind the verdict's intervals.
* **Embedding**: PCA of the probe features (the cached ones of ``wearspec probe``) of held-out windows, coloured
  by class, pretrained vs random init.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wearspec.data.store import WindowStore
from wearspec.demo.verdict import classical_models, deep_models, subject_scores
from wearspec.evaluate.plots import new_figure, save_figure
from wearspec.models.backbones import SpectrogramBackbone
from wearspec.models.encoder import SpectrogramEncoder, encoder_from_checkpoint
from wearspec.ssl.losses import match_tokens


@torch.no_grad()
def cls_attention(backbone: SpectrogramBackbone, spec: Tensor) -> Tensor:
    """ViT: (B, C, F, N) spectrograms → (B, h, w) last-block class-token attention over the patch tokens,
    mean over heads (each map sums to 1 minus the attention on the class token itself)."""
    if backbone.arch != "vit":
        raise ValueError("class-token attention maps need a ViT backbone")
    vit, seen = backbone.model, {}
    attn = vit.blocks[-1].attn
    hook = attn.register_forward_hook(lambda m, args, out: seen.setdefault("x", args[0]))
    try:
        backbone(spec)
    finally:
        hook.remove()
    x = seen["x"]  # (B, 1 + h·w, D): the block's normed input
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, L, L)
    h, w = backbone.token_grid(tuple(spec.shape[-2:]))
    return weights[:, :, 0, vit.num_prefix_tokens:].mean(1).reshape(b, h, w)


def _show(ax, img: np.ndarray, extent: tuple[float, float, float, float], title: str = "") -> None:
    ax.imshow(img, aspect="auto", origin="lower", cmap="magma", extent=extent)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def attention_figure(encoder: SpectrogramEncoder, windows: np.ndarray, names: list[str], path: Path) -> dict:
    """One column per window: its spectrogram (mean over channels) and the attention map over it."""
    spec = encoder.frontend(torch.from_numpy(windows))
    maps = cls_attention(encoder.backbone, spec).numpy()
    img = spec.mean(1).numpy()
    fig = new_figure(2.3 * len(names), 4.2)
    n_f, n_t = img.shape[1:]
    for j, name in enumerate(names):
        _show(fig.add_subplot(2, len(names), j + 1), img[j], (0, n_t, 0, n_f), name)
        ax = fig.add_subplot(2, len(names), len(names) + j + 1)
        _show(ax, img[j], (0, n_t, 0, n_f))
        h, w = maps[j].shape  # the token grid covers the input padded up to whole patches
        pf, pn = encoder.backbone.patch_size
        ax.imshow(maps[j], aspect="auto", origin="lower", cmap="viridis", alpha=0.65, extent=(0, w * pn, 0, h * pf))
        ax.set_xlim(0, n_t)
        ax.set_ylim(0, n_f)
    fig.suptitle("last-block class-token attention (bottom) over the normalised spectrogram (top)", fontsize=9)
    save_figure(fig, path)
    peak = maps.reshape(len(names), -1).max(1) / maps.reshape(len(names), -1).sum(1)
    return {"png": str(path), "windows": len(names), "grid": list(maps.shape[1:]),
            "peak_share_mean": float(peak.mean())}


def _token_centres(grid: tuple[int, int], stride: tuple[float, float], offset: float) -> np.ndarray:
    """(h·w, 2) token centres (frequency bin, absolute frame), row-major over (freq, time)."""
    f = (np.arange(grid[0]) + 0.5) * stride[0]
    t = offset + (np.arange(grid[1]) + 0.5) * stride[1]
    return np.stack(np.meshgrid(f, t, indexing="ij"), -1).reshape(-1, 2)


def token_stride(backbone: SpectrogramBackbone, size: tuple[int, int]) -> tuple[int, int]:
    """(frequency bins, frames) per token of the backbone's token grid (patch × the stages' downsampling)."""
    grid = backbone.token_grid(size)
    return tuple(p * max(1, round(-(-n // p) / g)) for p, n, g in zip(backbone.patch_size, size, grid))


@torch.no_grad()
def match_crops(encoder: SpectrogramEncoder, windows: np.ndarray, shift_frac: float = 0.3) -> dict:
    """Region matching between crops A = [0, N − s) and B = [s, N) (module docstring) of every window; s is a
    whole number of token strides, so the two token grids line up."""
    spec = encoder.frontend(torch.from_numpy(windows))
    n = spec.shape[-1]
    stride = token_stride(encoder.backbone, tuple(spec.shape[-2:]))
    s = stride[1] * max(1, int(round(shift_frac * n / stride[1])))
    a, b = spec[..., : n - s], spec[..., s:]
    oa, ob = encoder.backbone(a), encoder.backbone(b)
    match = match_tokens(ob.tokens, oa.tokens).numpy()  # (B, L_b): the region loss's best A token of each B token
    ca, cb = _token_centres(oa.grid, stride, 0.0), _token_centres(ob.grid, stride, float(s))
    step = np.asarray(stride, dtype=np.float64)
    inside = cb[:, 1] < n - s  # B tokens whose position also lies in A
    dist = np.abs(ca[match] - cb[None]) / step  # (B, L_b, 2) in tokens
    consistent = (dist <= 1.0 + 1e-6).all(-1)
    near = (np.abs(ca[None, :, :] - cb[inside][:, None, :]) / step <= 1.0 + 1e-6).all(-1)  # (L_in, L_a)
    return {"spec": spec.mean(1).numpy(), "shift": s, "match": match, "centres_a": ca, "centres_b": cb,
            "inside": inside, "step": step, "rate": float(consistent[:, inside].mean()), "chance": float(near.mean()),
            "tokens": int(inside.sum())}


def region_figure(res: dict, res_random: dict, path: Path, n_lines: int = 14) -> dict:
    """Crops A and B of the first window with lines from B tokens to their matched A tokens."""
    from matplotlib.patches import ConnectionPatch

    img, s = res["spec"][0], res["shift"]
    n_f, n = img.shape
    fig = new_figure(9.0, 3.4)
    ax_a, ax_b = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    _show(ax_a, img[:, : n - s], (0, n - s, 0, n_f), f"crop A: frames 0–{n - s}")
    _show(ax_b, img[:, s:], (s, n, 0, n_f), f"crop B: frames {s}–{n}")
    inside = np.flatnonzero(res["inside"])
    picks = inside[np.linspace(0, len(inside) - 1, min(n_lines, len(inside))).round().astype(int)]
    ca, cb, match, step = res["centres_a"], res["centres_b"], res["match"][0], res["step"]
    for j in picks:
        ok = bool((np.abs(ca[match[j]] - cb[j]) / step <= 1.0 + 1e-6).all())
        color = "lime" if ok else "red"
        fig.add_artist(ConnectionPatch(xyA=(cb[j, 1], cb[j, 0]), coordsA=ax_b.transData,
                                       xyB=(ca[match[j], 1], ca[match[j], 0]), coordsB=ax_a.transData,
                                       color=color, linewidth=0.9, alpha=0.8))
        ax_b.plot(cb[j, 1], cb[j, 0], "o", color=color, markersize=3)
        ax_a.plot(ca[match[j], 1], ca[match[j], 0], "o", color=color, markersize=3)
    fig.suptitle(f"teacher token matching, B → A: {res['rate']:.2f} consistent (random init {res_random['rate']:.2f}, "
                 f"chance {res['chance']:.2f}); green = within one token of the same position", fontsize=8)
    save_figure(fig, path)
    return {"png": str(path), "shift_frames": s, "overlap_tokens": res["tokens"], "consistent_teacher": res["rate"],
            "consistent_random": res_random["rate"], "chance": res["chance"]}


def _pca2(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    var = sv ** 2 / max((sv ** 2).sum(), 1e-30)
    return x @ vt[:2].T, [float(v) for v in var[:2]]


def embedding_figure(features: dict[str, tuple[np.ndarray, np.ndarray]], label_names: list[str], path: Path) -> dict:
    """``features``: {title: (feats (n, D), labels (n,))} → side-by-side PCA scatter plots."""
    import matplotlib

    fig = new_figure(5.0 * len(features), 4.3)
    cmap = matplotlib.colormaps["tab10"]
    explained = {}
    for i, (title, (x, y)) in enumerate(features.items()):
        z, var = _pca2(x)
        explained[title] = var
        ax = fig.add_subplot(1, len(features), i + 1)
        for k, name in enumerate(label_names):
            sel = y == k
            if sel.any():
                ax.scatter(z[sel, 0], z[sel, 1], s=6, color=cmap(k % 10), label=name, alpha=0.7)
        ax.set_title(f"{title}: PCA ({100 * sum(var):.0f}% of variance)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.axes[-1].legend(fontsize=7, markerscale=2, loc="best")
    save_figure(fig, path)
    return {"png": str(path), "windows": int(len(next(iter(features.values()))[1])), "explained_variance": explained}


def subjects_figure(models: dict[str, dict[str, float]], path: Path) -> dict:
    """``models``: {name: {test subject: macro-F1}} → one row per model, a dot per subject and a bar at the
    mean: the spread the verdict's bootstrap intervals come from."""
    import matplotlib

    names = [n for n, v in models.items() if v]
    subjects = sorted({s for n in names for s in models[n]})
    fig = new_figure(7.5, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["tab20"]
    for row, name in enumerate(reversed(names)):
        scores = models[name]
        for j, s in enumerate(subjects):
            if s in scores:
                ax.plot(scores[s], row, "o", color=cmap(j % 20), markersize=5, alpha=0.8,
                        label=s if row == 0 else None)
        ax.plot([np.mean(list(scores.values()))] * 2, [row - 0.3, row + 0.3], color="black", linewidth=2)
    ax.set_yticks(range(len(names)), list(reversed(names)), fontsize=8)
    ax.set_xlabel("macro-F1 per test subject (bar: mean)", fontsize=8)
    if len(subjects) <= 12:
        ax.legend(fontsize=6, ncol=min(6, len(subjects)), loc="lower left", bbox_to_anchor=(0, 1.0))
    save_figure(fig, path)
    return {"png": str(path), "models": names, "subjects": len(subjects)}


def _held_out_features(report_path: Path, test_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import json

    cache = json.loads(report_path.read_text())["features"]["cache"]
    with np.load(cache, allow_pickle=False) as z:
        keep = np.isin(z["subjects"], test_codes)
        return z["feats"][keep], z["labels"][keep]


def make_figures(out: Path, done: dict, seed: int = 0, windows: int = 64) -> dict[str, Any]:
    """Draw the three figures into ``out/report/`` from the run's files; returns their numbers."""
    store = WindowStore(done["data"]["store"])
    folder = out / "report"
    test_codes = np.array([store.subject_names.index(s) for s in done["data"]["test_subjects"]])
    held = np.flatnonzero(np.isin(store.subjects, test_codes) & (store.labels >= 0))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(held, size=min(windows, len(held)), replace=False))
    ckpt = done["pretrain"]["checkpoint"]
    teacher, _ = encoder_from_checkpoint(ckpt, "teacher")
    random_init, _ = encoder_from_checkpoint(ckpt, "random")
    x = store.read_batch(pick)
    result: dict[str, Any] = {}
    if teacher.backbone.arch == "vit":
        one = [int(rng.choice(held[store.labels[held] == k])) for k in range(len(store.label_names))
               if (store.labels[held] == k).any()]
        result["attention"] = attention_figure(teacher, store.read_batch(one),
                                               [store.label_names[store.labels[i]] for i in one],
                                               folder / "attention.png")
    else:
        result["attention"] = {"skipped": f"class-token attention maps need a ViT; this backbone is "
                                          f"{teacher.backbone.arch} (windowed attention)"}
    result["region"] = region_figure(match_crops(teacher, x), match_crops(random_init, x), folder / "region.png")
    feats = {f"{'SSL teacher' if w == 'teacher' else 'random init'}": _held_out_features(
        out / "probe" / w / "report.json", test_codes) for w in ("teacher", "random")}
    result["embedding"] = embedding_figure(feats, store.label_names, folder / "embedding.png")
    models = {name: subject_scores(rep) for name, rep in {**deep_models(out), **classical_models(out)}.items()}
    if any(models.values()):
        result["subjects"] = subjects_figure(models, folder / "subjects.png")
    return result
