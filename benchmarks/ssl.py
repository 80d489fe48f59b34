"""Does EsViT/DINO pretraining pay off? SSL probe vs random-init probe vs supervised, held-out subjects.

The issue's benchmark, on the embedded synthetic data: a tiny ViT and a tiny Swin pretrained for a
budget of about ``--budget-min`` CPU-minutes each, then, per backbone,

(a) ``ssl``: ``run_pretrain`` (``configs/pretrain_{vit,swin}_tiny.yaml``) → ``run_probe`` (which=teacher):
    weighted k-NN and linear probe on frozen features;
(b) ``random``: ``run_probe`` (which=random) on the same checkpoint: the same front end (normalisation
    statistics), the backbone randomly initialised: what pretraining adds;
(c) ``supervised``: the same encoder (front end + backbone) + a linear head trained from scratch with
    cross-entropy on the labelled training subjects (AdamW, warm-up + cosine, the same batched on-device
    augmentations of ``wearspec.data.augment``), the epoch kept by validation-subject macro-F1.

Data: ``prepare synthetic`` with the default 24 labelled subjects (6 min each at 50 Hz, 5 s windows,
2.5 s hop) plus ``--unlabelled`` unlabelled subjects (the pretraining pool). One fixed subject split
(seeded): 8 test subjects, 4 validation subjects, 12 training subjects. Pretraining sees the unlabelled
subjects and the training subjects' windows, never the validation or test subjects
(``exclude_subjects``); the probe and the supervised model train on the training subjects, select on the
validation subjects and report once on the test subjects (the same ``split.test_subjects`` /
``split.val_subjects`` for every method).

``--kfold K``: a reading that rests on every labelled subject instead of 8: pretraining sees only the
unlabelled subjects, and the two probes run K-fold cross-validation by subject over all labelled subjects
(a quarter of each fold's other subjects validate), predictions pooled; the supervised model trains once per
fold on the same subjects (``--skip supervised`` leaves it out: 3 models cost ~3× the one split's). The
pretraining pool is smaller (no training subjects), so ``--budget-min`` must grow for the same number of
steps (24 unlabelled subjects: 15 gives about the 1280 steps of the one-split mode's 10).

``--tune``: the mode used to tune the recipe. The test subjects are never touched (not probed, not
evaluated). The probes run 4-fold cross-validation by subject over the 16 non-test subjects (so a setting
is scored on 16 subjects, not 4; 12 of them are in the pretraining pool, a small transductive advantage
that every setting shares), and the supervised model trains on 9 training subjects, selects on 3 and is
scored on the 4 validation subjects. Pretraining is identical in both modes.

Budget: the YAML recipes fix the epochs that fit ~10 minutes of this 2-core VM;
``--budget-min B`` scales the epochs by B / 10 (so a run is reproducible: a fixed number of steps with
fixed seeds, whatever the machine's load), and the measured wall-clock and process CPU time of every
phase are reported next to the scores.

    python benchmarks/ssl.py [--budget-min 10] [--backbones vit,swin] [--out DIR] [--json PATH] [--tune]
                             [--set vit:optim.lr=1e-3 ...] [--reuse]
    python benchmarks/ssl.py --kfold 3 --budget-min 15 [--backbones vit,swin]
"""

from __future__ import annotations

import sys

if __name__ == "ssl":
    # Another script in benchmarks/ ran (benchmarks/ is then sys.path[0]) and something imported the standard
    # library's ``ssl`` (asyncio via tqdm, urllib, ...), which found this file. Put the real module in its
    # place: the import machinery returns ``sys.modules["ssl"]``, so ``import ssl`` gets the standard library.
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location("ssl", sysconfig.get_paths()["stdlib"] + "/ssl.py")
    _real = importlib.util.module_from_spec(_spec)
    sys.modules["ssl"] = _real
    _spec.loader.exec_module(_real)
    _IMPORTED_AS_SSL = True
else:
    _IMPORTED_AS_SSL = False

from pathlib import Path  # noqa: E402

import argparse  # noqa: E402
import copy  # noqa: E402
import shutil  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if not _IMPORTED_AS_SSL:  # as the stand-in for the standard library's ssl, define functions only
    # Run as ``python benchmarks/ssl.py``, this folder is sys.path[0]: drop it, so that this file does not
    # shadow the standard library's ``ssl`` for the imports below, and put the repository first.
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

    import numpy as np
    import torch
    import torch.nn.functional as F

    from benchmarks._common import (REFERENCE_BUDGET_MIN, Timer, add_data_args, make_store, pretrain, pretrain_config,
                                    save_results, subject_split)
    from wearspec.config import from_dict, load_config, to_dict
    from wearspec.data.augment import AugmentConfig, build_sensor_augment, build_spec_augment, make_generator
    from wearspec.data.frontend import build_frontend
    from wearspec.data.store import StoreWriter, WindowStore
    from wearspec.evaluate.metrics import classification_report, format_mean_sd, macro_f1
    from wearspec.data.splits import make_splits
    from wearspec.evaluate.probe import ProbeConfig, SplitConfig, run_probe
    from wearspec.models.backbones import BackboneConfig, build_backbone
    from wearspec.models.encoder import SpectrogramEncoder
    from wearspec.ssl.pretrain import PretrainConfig
    from wearspec.training.schedules import cosine_schedule, param_groups

PROBE_CONFIG = ROOT / "configs" / "probe.yaml"
PROBE_ARCH = {"vit": ["n_last=4"], "swin": ["n_last=2"]}  # ViT: CLS of the last 4 blocks; Swin: both stages


# -- data and split (the split itself: benchmarks/_common.py) -------------------------------------
def labelled_subset(store: WindowStore, subjects: list[str], folder: Path) -> Path:
    """A store with only the labelled windows of ``subjects``: for the probe in tuning mode, which trains on
    every labelled subject that is neither a test nor a validation subject (the test subjects must not be
    among them)."""
    if (folder / "manifest.json").is_file() and WindowStore(folder).meta.get("subjects") == list(subjects):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    with StoreWriter(folder, channels=store.channels, rate=store.rate, window=store.window, hop=store.hop,
                     label_names=store.label_names, dtype=str(store.dtype), fingerprint="subset",
                     meta=dict(store.meta, subset_of=str(store.path), subjects=list(subjects))) as writer:
        for name in subjects:
            idx = windows_of(store, [name])
            for rec in np.unique(store.recordings[idx]):
                part = idx[store.recordings[idx] == rec]
                writer.add(store.read_batch(part), name, store.recording_names[rec], store.starts[part],
                           store.labels[part])
    return folder


def windows_of(store: WindowStore, subjects: list[str], labelled: bool = True) -> np.ndarray:
    codes = [store.subject_names.index(s) for s in subjects]
    keep = np.isin(store.subjects, codes) & ((store.labels >= 0) if labelled else True)
    return np.flatnonzero(keep)


# -- (a), (b) probes ----------------------------------------------------------------------------------
def probe_folds(split: dict) -> SplitConfig:
    """The subject folds of the probes in tuning and ``--kfold`` mode (the supervised model's too in ``--kfold``);
    ``split["probe_split"]`` (SplitConfig settings, e.g. ``{"mode": "predefined"}``) replaces them."""
    if split.get("probe_split"):
        return SplitConfig(**split["probe_split"])
    return SplitConfig(mode="kfold", k=split["probe_kfold"], val_fraction=split.get("probe_val_fraction", 0.15), seed=0)


def probe(run_dir: Path, store: Path, out: Path, which: str, split: dict, overrides: list[str]) -> dict:
    cfg = load_config(ProbeConfig, PROBE_CONFIG, overrides)
    cfg.checkpoint, cfg.store, cfg.output, cfg.which, cfg.device = str(run_dir), str(store), str(out), which, "cpu"
    if split.get("probe_kfold"):  # tuning / --kfold: folds over the probe store's subjects (each evaluated once)
        cfg.split = probe_folds(split)
    else:
        cfg.split = SplitConfig(mode="holdout", test_subjects=split["test"], val_subjects=split["val"], seed=0)
    if out.exists():
        shutil.rmtree(out)
    with Timer() as t:
        report = run_probe(cfg, verbose=False)
    res = {"wall_s": t.wall, "cpu_s": t.cpu, "n_last": cfg.n_last, "avgpool": cfg.avgpool}
    for method in ("knn", "linear"):
        r = report[method]
        res[method] = {"macro_f1": r["pooled"]["macro_f1"], "accuracy": r["pooled"]["accuracy"],
                       "subject_macro_f1": r["subject_summary"]["macro_f1"]}
    sel = report["linear"]["selection"][0]
    res["linear"]["selected"] = {"lr": sel["lr"], "weight_decay": sel["weight_decay"], "val_macro_f1": sel["score"]}
    for method in ("knn", "linear"):  # the feature set each split chose on validation (avgpool=auto)
        res[method]["features"] = [s["features"] for s in report[method]["selection"]]
    return res


# -- (c) supervised from scratch ----------------------------------------------------------------------
SUPERVISED = dict(epochs=60, patience=15, batch_size=64, lr=1e-3, weight_decay=0.05, warmup_epochs=3,
                  label_smoothing=0.1, drop_path=0.1, clip_grad=3.0, seed=0)
SUPERVISED_AUGMENT = dict(rotation_p=0.5, rotation_max_deg=30.0, scaling_p=0.5, scaling_sigma=0.1, time_warp_p=0.0,
                          jitter_p=0.5, jitter_sigma=0.01, time_roll_p=0.5, time_mask_p=0.3, time_masks=1,
                          freq_mask_p=0.3, freq_masks=1, freq_mask_width=2, noise_p=0.5)


def supervised_folds(store: WindowStore, split: dict) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(train, val, test) windows per fold: the one split, or in k-fold mode the probe's own folds (the same
    ``make_splits`` call on the same store, so every method sees the same subjects)."""
    if not split.get("probe_kfold") or split["train"]:
        return [tuple(windows_of(store, split[k]) for k in ("train", "val", "test"))]
    folds = make_splits(store, np.flatnonzero(store.labels >= 0), probe_folds(split))
    return [(sp.train, sp.val, sp.test) for sp in folds]


def supervised(arch_cfg: PretrainConfig, store: WindowStore, split: dict, seed: int, hp: dict) -> dict:
    """The pretraining config's front end and backbone, a linear head on the pooled feature, trained with
    cross-entropy on the training subjects; the epoch with the best validation macro-F1 is evaluated on
    the test subjects (early stop after ``patience`` epochs without improvement). In k-fold mode one model
    per fold, the test predictions pooled."""
    x_all = torch.from_numpy(store.read_batch(np.arange(len(store))))
    y_all = torch.from_numpy(store.labels.astype(np.int64))
    tests, preds, folds = [], [], []
    with Timer() as t:
        for tr, va, te in supervised_folds(store, split):
            pred, info = train_supervised(arch_cfg, store, x_all, y_all, (tr, va, te), seed, hp)
            tests.append(te)
            preds.append(pred)
            folds.append(info)
    te = np.concatenate(tests)
    rep = classification_report(y_all[te].numpy(), np.concatenate(preds), store.subjects[te], store.label_names,
                                store.subject_names)
    one = folds[0] if len(folds) == 1 else {}
    return {"wall_s": t.wall, "cpu_s": t.cpu, **one, "folds": folds, "macro_f1": rep["pooled"]["macro_f1"],
            "accuracy": rep["pooled"]["accuracy"], "subject_macro_f1": rep["subject_summary"]["macro_f1"],
            "hyper_parameters": {k: v for k, v in hp.items()}}


def train_supervised(arch_cfg: PretrainConfig, store: WindowStore, x_all: torch.Tensor, y_all: torch.Tensor,
                     windows: tuple[np.ndarray, np.ndarray, np.ndarray], seed: int,
                     hp: dict) -> tuple[np.ndarray, dict]:
    """One model on (train, val, test) windows: (test predictions, {epochs_run, best_epoch, val_macro_f1, ...})."""
    torch.manual_seed(seed)
    tr, va, te = windows
    n_classes = len(store.label_names)
    frontend = build_frontend(arch_cfg.frontend, store.rate, store.window, store.channels)
    fit = np.random.default_rng(seed).permutation(tr)[: arch_cfg.frontend.fit_windows]
    frontend.fit(x_all[np.sort(fit)])
    input_size = frontend.output_shape(store.n_channels, store.window)[1:]
    bcfg = from_dict(BackboneConfig, {**to_dict(arch_cfg.backbone), "drop_path_rate": hp["drop_path"]})
    encoder = SpectrogramEncoder(frontend, build_backbone(bcfg, store.n_channels, input_size))
    model = torch.nn.ModuleDict({"encoder": encoder, "head": torch.nn.Linear(encoder.backbone.embed_dim, n_classes)})
    aug = from_dict(AugmentConfig, hp["augment"])
    sensor_aug, spec_aug = build_sensor_augment(aug, channels=store.channels), build_spec_augment(aug)
    no_decay = {f"encoder.{n}" for n in encoder.no_weight_decay()}
    optimizer = torch.optim.AdamW(param_groups(model, hp["weight_decay"], no_decay_names=no_decay))
    steps_per_epoch = len(tr) // hp["batch_size"]
    total = hp["epochs"] * steps_per_epoch
    lr_s = cosine_schedule(hp["lr"], 1e-6, total, min(hp["warmup_epochs"], hp["epochs"]) * steps_per_epoch)
    gen, order_rng = make_generator(seed), np.random.default_rng(seed)

    def predict(idx: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.inference_mode():
            out = [model["head"](encoder(x_all[idx[a:a + 256]]).pooled).argmax(1) for a in range(0, len(idx), 256)]
        return torch.cat(out).numpy()

    best, best_state, best_epoch, history, step = -1.0, None, -1, [], 0
    for epoch in range(hp["epochs"]):
        model.train()
        order = order_rng.permutation(tr)
        for k in range(steps_per_epoch):
            idx = np.sort(order[k * hp["batch_size"]:(k + 1) * hp["batch_size"]])
            for g in optimizer.param_groups:
                g["lr"] = float(lr_s[step])
            with torch.no_grad():
                spec = spec_aug(frontend(sensor_aug(x_all[idx], gen)), gen)
            logits = model["head"](encoder.backbone(spec).pooled)
            loss = F.cross_entropy(logits, y_all[idx], label_smoothing=hp["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["clip_grad"])
            optimizer.step()
            step += 1
        score = macro_f1(y_all[va].numpy(), predict(va))
        history.append(round(score, 4))
        if score > best:
            best, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= hp["patience"]:
            break
    model.load_state_dict(best_state)
    pred = predict(te)  # the test subjects, once, with the model chosen on validation
    return pred, {"epochs_run": len(history), "best_epoch": best_epoch + 1, "val_macro_f1": best,
                  "val_history": history}


# -- report -------------------------------------------------------------------------------------------
def table(results: dict) -> str:
    """Scores (pooled macro-F1 and per-subject mean ± SD) and the wall-clock of every phase."""
    msd = format_mean_sd
    lines = ["| backbone | method | k-NN macro-F1 | k-NN per subject | linear macro-F1 | linear per subject |",
             "|---|---|---|---|---|---|"]
    for arch, r in results.items():
        for which, label in (("ssl", "SSL (EsViT/DINO) probe"), ("random", "random-init probe")):
            k, li = r[which]["knn"], r[which]["linear"]
            lines.append(f"| {arch} | {label} | {k['macro_f1']:.3f} | {msd(k['subject_macro_f1'])} "
                         f"| {li['macro_f1']:.3f} | {msd(li['subject_macro_f1'])} |")
        if "supervised" in r:
            s = r["supervised"]
            lines.append(f"| {arch} | supervised from scratch | – | – | {s['macro_f1']:.3f} "
                         f"| {msd(s['subject_macro_f1'])} |")
    lines += ["", "| backbone | pretrain wall (CPU) | steps × batch | SSL probe | random probe | supervised |",
              "|---|---|---|---|---|---|"]
    for arch, r in results.items():
        p, s = r["pretrain"], r.get("supervised")
        sup = (f"{s['wall_s'] / 60:.1f} min ({s['cpu_s'] / 60:.1f} CPU-min), "
               f"{'/'.join(str(f['epochs_run']) for f in s['folds'])} epochs, best "
               f"{'/'.join(str(f['best_epoch']) for f in s['folds'])}" if s else "–")
        lines.append(f"| {arch} | {p['wall_s'] / 60:.1f} min ({p['cpu_s'] / 60:.1f} CPU-min) "
                     f"| {p['steps']} × {p['config']['optim']['batch_size']} | {r['ssl']['wall_s']:.0f} s "
                     f"| {r['random']['wall_s']:.0f} s | {sup} |")
    return "\n".join(lines)


def verdict(results: dict) -> str:
    lines = []
    for arch, r in results.items():
        ssl, rnd = r["ssl"]["linear"]["macro_f1"], r["random"]["linear"]["macro_f1"]
        line = (f"{arch}: SSL linear − random linear = {ssl - rnd:+.3f} (k-NN: "
                f"{r['ssl']['knn']['macro_f1'] - r['random']['knn']['macro_f1']:+.3f})")
        if "supervised" in r:
            sup, ssl_best = r["supervised"]["macro_f1"], max(ssl, r["ssl"]["knn"]["macro_f1"])
            line += (f"; SSL linear − supervised = {ssl - sup:+.3f} (best SSL probe − supervised = "
                     f"{ssl_best - sup:+.3f}; target ≥ −0.05: {'met' if ssl - sup >= -0.05 else 'not met'})")
        lines.append(line)
    return "\n".join(lines)


def supervised_hp(items: list[str]) -> dict:
    """The supervised model's hyper-parameters: ``SUPERVISED`` and ``SUPERVISED_AUGMENT`` with ``KEY=VALUE``
    overrides (``lr=``, ``epochs=``, ``augment.X=``; values parsed as YAML). Unknown keys raise ``KeyError``."""
    import yaml

    hp = dict(SUPERVISED, augment=dict(SUPERVISED_AUGMENT))
    for item in items:
        key, _, value = item.partition("=")
        val = yaml.safe_load(value)
        if key.startswith("augment."):
            hp["augment"][key[len("augment."):]] = val
        elif key in hp:
            hp[key] = val
        else:
            raise KeyError(f"--set supervised:{key}: unknown setting (expected augment.X or one of {', '.join(hp)})")
    return hp


def parse_sets(items: list[str], archs: list[str]) -> dict[str, list[str]]:
    """``--set vit:optim.lr=1e-3`` (one backbone) or ``--set optim.lr=1e-3`` (all)."""
    out: dict[str, list[str]] = {a: [] for a in archs}
    for item in items:
        head, _, rest = item.partition(":")
        if rest and head in ("vit", "swin", "probe", "supervised"):
            out.setdefault(head, []).append(rest)
        else:
            for a in archs:
                out[a].append(item)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-min", type=float, default=REFERENCE_BUDGET_MIN,
                    help="pretraining budget per backbone in minutes of the 2-core VM (scales the configs' epochs)")
    ap.add_argument("--backbones", default="vit,swin", help="comma-separated: vit, swin")
    add_data_args(ap, "/tmp/wearspec-bench-ssl")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared 2-core VM two threads are several times slower)")
    ap.add_argument("--tune", action="store_true",
                    help="tuning mode: report on the validation subjects; the test subjects are not touched")
    ap.add_argument("--set", action="append", default=[], metavar="[vit:|swin:|probe:|supervised:]KEY=VALUE",
                    help="override a pretraining (vit/swin), probe or supervised (lr=, epochs=, augment.X=) setting")
    ap.add_argument("--kfold", type=int, default=0,
                    help="K ≥ 2: pretrain on the unlabelled subjects only; the probes (SSL, random init) and the "
                         "supervised model run on the same K subject folds over every labelled subject")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: ssl, random, supervised")
    ap.add_argument("--reuse", action="store_true", help="reuse a finished pretraining run with the same config")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    archs = [a.strip() for a in args.backbones.split(",") if a.strip()]
    sets = parse_sets(args.set, archs)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    try:
        hp = supervised_hp(sets.get("supervised", []))
    except KeyError as e:
        ap.error(e.args[0])

    with Timer() as t_data:
        store = make_store(args.out / "store", args.unlabelled, args.seed)
    split = subject_split(store, args.split_seed, args.tune)
    if args.kfold:
        if args.tune:
            ap.error("--kfold and --tune exclude each other")
        labelled = sorted(split["train"] + split["val"] + split["test"])
        split = {"train": [], "val": [], "test": labelled, "pretrain_excluded": labelled,
                 "probe_kfold": args.kfold, "probe_val_fraction": 0.25}
    probe_store = args.out / "store"
    if args.tune:  # the probe's folds span every labelled subject of its store: keep the test subjects out
        probe_store = labelled_subset(store, split["probe_subjects"], args.out / "store_tune")
    role = "val subjects" if args.tune else "test subjects"
    print(f"store: {len(store)} windows ({int((store.labels >= 0).sum())} labelled), {len(store.subject_names)} "
          f"subjects; prepared in {t_data.wall:.1f} s")
    mode_name = "tuning" if args.tune else "k-fold" if args.kfold else "final"
    print(f"split ({mode_name}): train {split['train']}, val {split['val']}, evaluated {split['test']}; "
          f"pretraining excludes {split['pretrain_excluded']}")

    results: dict = {}
    mode = "tune" if args.tune else f"kfold{args.kfold}" if args.kfold else "final"
    for arch in archs:
        run_dir = args.out / "runs" / (f"{arch}_unlabelled" if args.kfold else arch)
        cfg = pretrain_config(arch, args.out / "store", run_dir, split, args.budget_min, sets[arch])
        r: dict = {}
        if not {"ssl", "random"} <= skip:
            print(f"\n== {arch}: pretraining {cfg.optim.epochs} epochs ({cfg.backbone.name}) ==", flush=True)
            r["pretrain"] = pretrain(cfg, args.reuse)
            print(f"pretrain: {r['pretrain']['wall_s'] / 60:.1f} min wall, {r['pretrain']['cpu_s'] / 60:.1f} min CPU, "
                  f"{r['pretrain']['steps']} steps, {r['pretrain']['windows_per_s']:.0f} windows/s", flush=True)
        if "ssl" not in skip:
            r["ssl"] = probe(run_dir, probe_store, args.out / "probe" / mode / arch / "ssl", "teacher", split,
                         PROBE_ARCH[arch] + sets.get("probe", []))
            print(f"ssl probe: k-NN {r['ssl']['knn']['macro_f1']:.3f}, linear {r['ssl']['linear']['macro_f1']:.3f} "
                  f"(linear val {r['ssl']['linear']['selected']['val_macro_f1']:.3f})", flush=True)
        if "random" not in skip:
            r["random"] = probe(run_dir, probe_store, args.out / "probe" / mode / arch / "random", "random",
                                split, PROBE_ARCH[arch] + sets.get("probe", []))
            print(f"random probe: k-NN {r['random']['knn']['macro_f1']:.3f}, linear "
                  f"{r['random']['linear']['macro_f1']:.3f}", flush=True)
        if "supervised" not in skip:
            r["supervised"] = supervised(cfg, store, split, seed=int(hp["seed"]), hp=hp)
            folds = r["supervised"]["folds"]
            print(f"supervised: {r['supervised']['macro_f1']:.3f} (val "
                  f"{'/'.join(format(f['val_macro_f1'], '.3f') for f in folds)}, best epoch "
                  f"{', '.join(str(f['best_epoch']) + '/' + str(f['epochs_run']) for f in folds)}, "
                  f"{r['supervised']['wall_s'] / 60:.1f} min)", flush=True)
        results[arch] = r

    complete = {a: r for a, r in results.items()
                if {"ssl", "random", "pretrain"} <= set(r) and ("supervised" in r or "supervised" in skip)}
    if complete:
        where = ("tuning: probes 4-fold over the 16 non-test subjects, supervised on the 4 validation subjects"
                 if args.tune else f"{args.kfold} subject folds over all {len(split['test'])} labelled subjects "
                 "(pretraining on the unlabelled subjects only)" if args.kfold
                 else f"the {role} ({', '.join(split['test'])})")
        print(f"\nEvaluated on {where}; pooled macro-F1 and per-subject mean ± SD.\n")
        print(table(complete))
        print("\n" + verdict(complete))
    out = {"mode": mode, "args": {k: str(v) for k, v in vars(args).items()}, "split": split,
           "torch_threads": torch.get_num_threads(), "results": results}
    return save_results(args.json, out)


if __name__ == "__main__":
    main()
