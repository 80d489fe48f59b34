"""``wearspec pretrain``: EsViT/DINO self-supervised pretraining on a window store.

Run alone (``wearspec pretrain store=… output=…``) or under ``torchrun`` (one process per GPU or
CPU rank; gloo on CPU, nccl on GPU; multi-node through the rendezvous). Read :func:`run_pretrain` top to
bottom: config → data → networks → optimiser and schedules → resume → loop → export. The loop, resume and
checkpoints are :mod:`wearspec.training.harness`'s; this recipe's own part of a step is :func:`_step_hooks`.

The output folder holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/ckpt-*.pt``
(full state, atomic, keep-last-k; the newest is resumed automatically), and once finished
``teacher_encoder.safetensors`` + ``encoder.json`` and ``curves.png``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wearspec.config import check_range, from_dict, saved_config_difference, to_dict, to_yaml
from wearspec.data.augment import AugmentConfig, build_sensor_augment, build_spec_augment
from wearspec.data.frontend import FrontendConfig, build_frontend
from wearspec.data.neighbours import TemporalNeighbours
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.models.backbones import PRESETS, BackboneConfig, build_backbone
from wearspec.models.encoder import SpectrogramEncoder, encoder_meta
from wearspec.ssl.heads import DINOHead, cancel_last_layer_gradients
from wearspec.ssl.losses import CENTERINGS, DINOLoss, RegionLoss, esvit_loss, koleo_loss
from wearspec.ssl.model import SSLNet, ViewMaker
from wearspec.ssl.masking import MaskedTokenLoss, random_token_masks
from wearspec.ssl.defaults import StoreShape, derive_pretrain_settings
from wearspec.ssl.monitor import CollapseError, CollapseGuard, CollapseMonitor, collapse_stats
from wearspec.ssl.multicrop import MultiCrop, MultiCropConfig
from wearspec.training.harness import LoopSpec, StepHooks, Trainer
from wearspec.training.runtime import RuntimeConfig, wrap
from wearspec.training.schedules import (ema_update, lr_schedule, momentum_schedule, param_groups,
                                         teacher_temperature_schedule, wd_schedule)
from wearspec.utils import distributed as du
from wearspec.utils.checkpoint import save_weights
from wearspec.utils.io import write_json
from wearspec.utils.logging import RunLogger, read_metrics
from wearspec.utils.seed import seed_everything


@dataclass
class HeadConfig:
    """DINO projection head (and the EsViT dense head, same form, when ``region``)."""

    out_dim: int | None = None  # prototypes K; null: from the number of windows (ssl.defaults)
    hidden_dim: int = 512
    bottleneck_dim: int = 128
    nlayers: int = 3
    norm_last_layer: bool = True  # fix the last layer's weight-norm gain to 1 (more stable)
    freeze_last_layer_epochs: int = 1  # drop the last layer's gradients during the first epochs
    region: bool = True  # EsViT region-level loss with a dense head on every token


@dataclass
class LossConfig:
    student_temp: float = 0.1
    teacher_temp: float = 0.04  # final teacher temperature (keep ≤ 0.07: higher collapses on small data)
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    centering: str = "ema"  # ema (DINO center) | sinkhorn (equipartition per batch, DINOv2): see DINOLoss
    sinkhorn_iters: int = 3
    # KoLeo uniformity of the student's pooled features, averaged over the global views (DINOv2 sums the two:
    # its 0.1 is 0.2 here); 0 = off
    koleo_weight: float = 0.0
    view_weight: float = 0.5
    region_weight: float = 0.5
    # masked-token prediction (iBOT, ViT only; wearspec.ssl.masking): the most patches hidden in a student's
    # global view (half of the samples, ratio uniform in [0.1, mask_ratio]); 0 = off
    mask_ratio: float = 0.0
    mask_weight: float = 1.0


@dataclass
class OptimConfig:
    epochs: int | None = None  # null: enough for about 2000 steps (ssl.defaults)
    # > 0: an epoch is this many steps (each a fresh shuffle of the whole store), not a full pass: for stores of
    # millions of windows, where one pass is days; the schedules' warm-up_epochs and epochs count these
    steps_per_epoch: int = 0
    batch_size: int = 64  # per rank; the LR scales with the global batch (batch_size × ranks)
    lr: float = 5e-4  # at a global batch of 256
    min_lr: float = 1e-6
    warmup_epochs: int = 5
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0  # global gradient-norm clip (0 = off)
    momentum_teacher: float = 0.996  # EMA momentum, cosine → 1


@dataclass
class PretrainConfig:
    store: str = ""
    output: str = "runs/pretrain"
    exclude_subjects: list[str] = field(default_factory=list)  # e.g. held-out test subjects
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(drop_path_rate=0.1))
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    # rotation_max_deg null: mounting-scale rotations (ssl.defaults), not the full sphere
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(rotation_max_deg=None))
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        self.runtime.validate()
        if (self.optim.epochs is not None and self.optim.epochs < 1) or self.optim.batch_size < 1:
            raise WearspecError("optim.epochs and optim.batch_size: expected ≥ 1 (epochs null: derived)")
        o, h, lo = self.optim, self.head, self.loss
        for key, value in (("lr", o.lr), ("min_lr", o.min_lr), ("weight_decay", o.weight_decay),
                           ("weight_decay_end", o.weight_decay_end), ("warmup_epochs", o.warmup_epochs),
                           ("clip_grad", o.clip_grad)):
            check_range(f"optim.{key}", value, 0, note="clip_grad 0 = off" if key == "clip_grad" else "")
        check_range("optim.momentum_teacher", o.momentum_teacher, 0, 1)
        for key in ("hidden_dim", "bottleneck_dim", "nlayers"):
            check_range(f"head.{key}", getattr(h, key), 1)
        check_range("head.freeze_last_layer_epochs", h.freeze_last_layer_epochs, 0)
        for key in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            check_range(f"loss.{key}", getattr(lo, key), 0, low_open=True)
        check_range("loss.warmup_teacher_temp_epochs", lo.warmup_teacher_temp_epochs, 0)
        check_range("loss.center_momentum", lo.center_momentum, 0, 1)
        for key in ("view_weight", "region_weight"):
            check_range(f"loss.{key}", getattr(lo, key), 0)
        check_range("optim.steps_per_epoch", o.steps_per_epoch, 0, note="0 = a full pass")
        if self.head.out_dim is not None and self.head.out_dim < 2:
            raise WearspecError(f"head.out_dim: expected ≥ 2 prototypes (null: derived), got {self.head.out_dim}")
        if self.loss.centering not in CENTERINGS:
            raise WearspecError(f"loss.centering: expected {' or '.join(CENTERINGS)}, got {self.loss.centering!r}")
        if self.loss.sinkhorn_iters < 1:
            raise WearspecError(f"loss.sinkhorn_iters: expected ≥ 1, got {self.loss.sinkhorn_iters}")
        if not self.loss.koleo_weight >= 0:
            raise WearspecError(f"loss.koleo_weight: expected ≥ 0, got {self.loss.koleo_weight}")
        if not 0.0 <= self.loss.mask_ratio < 1.0 or self.loss.mask_weight < 0:
            raise WearspecError(f"loss.mask_ratio / mask_weight: expected [0, 1) and ≥ 0, got {self.loss.mask_ratio}, "
                                f"{self.loss.mask_weight}")
        if self.loss.mask_ratio > 0 and PRESETS.get(self.backbone.name, {}).get("arch") == "swin":
            raise WearspecError(f"loss.mask_ratio: masked-token prediction needs a ViT backbone, got "
                                f"{self.backbone.name!r}; set loss.mask_ratio=0")
        if self.loss.koleo_weight > 0 and self.optim.batch_size < 2:
            raise WearspecError("loss.koleo_weight > 0 needs optim.batch_size ≥ 2 (nearest neighbours in the batch)")


def _net(cfg: PretrainConfig, frontend, in_chans: int, input_size, drop_path: float) -> SSLNet:
    bcfg = from_dict(BackboneConfig, {**to_dict(cfg.backbone), "drop_path_rate": drop_path})
    backbone = build_backbone(bcfg, in_chans, input_size)
    h = cfg.head
    head = DINOHead(backbone.embed_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim, h.nlayers, h.norm_last_layer)
    masked = cfg.loss.mask_ratio > 0
    dense = (DINOHead(backbone.token_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim, h.nlayers, h.norm_last_layer)
             if h.region or masked else None)
    return SSLNet(SpectrogramEncoder(frontend, backbone), head, dense, mask_token=masked)


def _select(store: WindowStore, exclude: list[str]) -> np.ndarray:
    unknown = [s for s in exclude if s not in store.subject_names]
    if unknown:
        raise WearspecError(f"exclude_subjects: {unknown[0]!r} is not a subject of {store.path}")
    codes = [store.subject_names.index(s) for s in exclude]
    return np.flatnonzero(~np.isin(store.subjects, codes))


def _check_same_run(out: Path, cfg: PretrainConfig) -> None:
    """A resumed run must be the same experiment: only runtime settings may change."""
    diff = saved_config_difference(out / "config.yaml", to_dict(cfg), ignore=("runtime", "output"))
    if diff is not None:
        raise WearspecError(f"{out / 'config.yaml'}: the run in {out} used different '{diff[0]}' settings "
                            f"({diff[1]}); resume it with the same config or choose another output folder")


@dataclass
class _Nets:
    """The pretraining networks and losses (student and teacher share the structure; the teacher gets no
    gradients and follows the student by EMA)."""

    frontend: torch.nn.Module  # the student's front end (fitted on a fresh run)
    student: SSLNet
    teacher: SSLNet
    views: ViewMaker  # raw windows (B, C, T) → multi-crop spectrogram views
    view_loss: DINOLoss
    region_loss: RegionLoss | None
    mask_loss: MaskedTokenLoss | None
    meta: dict  # encoder_meta of the exported encoder
    input_size: tuple[int, int]  # global crop (F, N)


def _build(cfg: PretrainConfig, store: WindowStore, dev: torch.device) -> _Nets:
    frontend = build_frontend(cfg.frontend, store.rate, store.window, store.channels).to(dev)
    input_size = tuple(cfg.crops.global_size) or frontend.output_shape(store.n_channels, store.window)[1:]
    student = _net(cfg, frontend, store.n_channels, input_size, cfg.backbone.drop_path_rate).to(dev)
    teacher = _net(cfg, build_frontend(cfg.frontend, store.rate, store.window, store.channels), store.n_channels,
                   input_size, 0.0).to(dev)
    teacher.requires_grad_(False)
    meta = encoder_meta(frontend.config(), cfg.backbone, store.n_channels, list(input_size), store.channels,
                        store.rate, store.window)
    multicrop = MultiCrop(cfg.crops, input_size=frontend.output_shape(store.n_channels, store.window)[1:])
    views = ViewMaker(frontend, build_sensor_augment(cfg.augment, channels=store.channels),
                      multicrop, build_spec_augment(cfg.augment), cfg.crops.n_global)
    view_loss = DINOLoss(cfg.head.out_dim, cfg.crops.n_global, cfg.loss.student_temp, cfg.loss.center_momentum,
                         cfg.loss.centering, cfg.loss.sinkhorn_iters).to(dev)
    region_loss = (RegionLoss(cfg.head.out_dim, cfg.crops.n_global, cfg.loss.student_temp,
                              cfg.loss.center_momentum).to(dev) if cfg.head.region else None)
    mask_loss = (MaskedTokenLoss(cfg.head.out_dim, cfg.crops.n_global, cfg.loss.student_temp,
                                 cfg.loss.center_momentum).to(dev) if cfg.loss.mask_ratio > 0 else None)
    return _Nets(frontend, student, teacher, views, view_loss, region_loss, mask_loss, meta, input_size)


def _schedules(cfg: PretrainConfig, tr: Trainer) -> dict[str, np.ndarray]:
    """Per-step (total,) schedules, indexed by the global step: lr, wd, teacher EMA momentum, teacher
    temperature (a warm-up longer than the run is cut at its end: a short run is the start of the long one)."""
    o, total, spe = cfg.optim, tr.total, tr.steps_per_epoch
    return {"lr": lr_schedule(o.lr, tr.global_batch, total, min(total, o.warmup_epochs * spe), o.min_lr),
            "wd": wd_schedule(total, o.weight_decay, o.weight_decay_end),
            "momentum": momentum_schedule(total, o.momentum_teacher),
            "temp": teacher_temperature_schedule(cfg.loss.warmup_teacher_temp, cfg.loss.teacher_temp,
                                                 cfg.loss.warmup_teacher_temp_epochs, total_epochs=-(-total // spe),
                                                 steps_per_epoch=spe)[:total]}


def run_pretrain(cfg: PretrainConfig) -> dict:
    cfg.validate()
    dist = du.init_distributed(cfg.runtime.device)
    seed_everything(cfg.runtime.seed, dist.rank)
    dev, out, o = dist.device, Path(cfg.output), cfg.optim

    # -- data: every window of the store but the excluded subjects' -------------------------------
    if not cfg.store:
        raise WearspecError("store: the window store to pretrain on is required (store=PATH)")
    store = WindowStore(cfg.store)
    store.verify()  # checksums and NaN/Inf, once, before any read (a damaged shard is refused here)
    selected = _select(store, cfg.exclude_subjects)
    # settings left null are derived from the store (ssl.defaults) and saved resolved in config.yaml
    derived = derive_pretrain_settings(cfg, StoreShape(len(selected), store.window, store.rate,
                                                       tuple(store.channels)), dist.world_size)
    tr = Trainer(LoopSpec("pretrain", "optim", out, cfg.runtime, dist, store, selected, o.batch_size, o.epochs,
                          o.clip_grad, steps_per_epoch=o.steps_per_epoch))

    # -- networks, optimiser and per-step schedules -------------------------------------------------
    nets = _build(cfg, store, dev)
    student, teacher = nets.student, nets.teacher
    no_decay = {f"encoder.backbone.{n}" for n in student.encoder.backbone.no_weight_decay()}
    sched = tr.set_optimizer(torch.optim.AdamW(param_groups(student, o.weight_decay, no_decay_names=no_decay)),
                             lambda: _schedules(cfg, tr))

    # -- resume or start ----------------------------------------------------------------------------
    state = tr.resume(lambda: _check_same_run(out, cfg))
    if state is None:  # fit the front end's normalisation on a seeded sample of the windows
        ds = tr.dataset
        fit_idx = np.random.default_rng(cfg.runtime.seed).permutation(len(ds))[: cfg.frontend.fit_windows]
        nets.frontend.fit(torch.from_numpy(store.read_batch(np.sort(ds.indices[fit_idx]))).to(dev))
    else:
        student.load_state_dict(state["student_net"])
        teacher.load_state_dict(state["teacher_net"])
        nets.view_loss.load_state_dict(state["view_loss"])
        if nets.region_loss is not None:
            nets.region_loss.load_state_dict(state["region_loss"])
        if nets.mask_loss is not None:
            nets.mask_loss.load_state_dict(state["mask_loss"])
    ranks = f"{dist.world_size} rank(s)" + (f" ({dist.backend})" if dist.backend else "")
    log = tr.start(to_dict(cfg), lambda: to_yaml(cfg), f"pretrain: {len(tr.dataset)} windows, {ranks} × batch "
                   f"{o.batch_size}, {tr.steps_per_epoch} steps/epoch, {tr.total} steps; input "
                   f"{tuple(nets.input_size)}", [student, teacher])
    if derived and dist.is_main:
        log.info("pretrain: derived from the store: " + "; ".join(
            f"{k}={v['value']} ({v['why']})" for k, v in derived.items()))
        log.log(tr.step, event="derived_settings",
                **{k: v["value"] for k, v in derived.items()})
    fwd_s = wrap(student, dist.distributed, cfg.runtime.compile)  # DDP gives every rank rank 0's initial student
    if state is None:
        teacher.load_state_dict(student.state_dict())  # so the teachers start equal on every rank too
    fwd_t = wrap(teacher, dist.distributed, cfg.runtime.compile, ddp=False)

    # -- the loop -----------------------------------------------------------------------------------
    student.train()
    teacher.train(False)
    step = tr.fit(_step_hooks(cfg, nets, tr, sched, fwd_s, fwd_t, log, store))

    # -- finish: the teacher's encoder is the result ---------------------------------------------------
    summary = {"steps": step, "total_steps": tr.total, "finished": step >= tr.total, "output": str(out),
               "amp": tr.amp}
    if dist.is_main and step >= tr.total:
        save_weights(teacher.encoder.state_dict(), out / "teacher_encoder.safetensors", {"stage": "pretrain"})
        write_json(out / "encoder.json", nets.meta)
        _plot_curves(out)
    log.close()
    du.barrier()
    du.cleanup()
    return summary


def _step_hooks(cfg: PretrainConfig, nets: _Nets, tr: Trainer, sched: dict[str, np.ndarray], fwd_s, fwd_t,
                log: RunLogger, store: WindowStore) -> StepHooks:
    """Pretraining's part of a step: views → student (all crops) and teacher (global crops) → DINO view loss
    (+ EsViT region loss, + KoLeo); the last layers' gradients dropped in the first epoch(s) before the global
    norm; then the EMA teacher, the collapse statistics and the centres (see the module docstring)."""
    student, teacher, view_loss, region_loss = nets.student, nets.teacher, nets.view_loss, nets.region_loss
    lc, n_global, monitor = cfg.loss, cfg.crops.n_global, CollapseMonitor()
    guard = CollapseGuard(_collapse_check_from(cfg, tr), window=max(1, min(50, tr.total // 10)))

    def resized(total: int) -> None:  # a time budget fixed the run's length: judge collapse against it
        guard.check_from, guard.window = _collapse_check_from(cfg, tr), max(1, min(50, total // 10))

    mask_loss = nets.mask_loss
    backbone = student.encoder.backbone

    def loss(crops, step: int, epoch: int):
        masks = ([random_token_masks(c.shape[0], backbone.token_grid(tuple(c.shape[-2:])), lc.mask_ratio,
                                     tr.generator, tr.device) for c in crops[:n_global]] if mask_loss else None)
        s = fwd_s(crops, masks)
        with torch.no_grad():
            t = fwd_t(crops[:n_global])
        temp = float(sched["temp"][step])
        loss_v = view_loss(s["cls"], t["cls"], temp)
        loss_r = (region_loss(s["tokens"], s["dense"], t["tokens"], t["dense"], temp)
                  if region_loss is not None else None)
        total = esvit_loss(loss_v, loss_r, lc.view_weight, lc.region_weight) if loss_r is not None else loss_v
        loss_k = (torch.stack([koleo_loss(p) for p in s["pooled"][:n_global]]).mean()
                  if lc.koleo_weight > 0 else None)
        if loss_k is not None:
            total = total + lc.koleo_weight * loss_k
        loss_m = mask_loss(s["dense"][:n_global], t["dense"], masks, temp) if mask_loss else None
        if loss_m is not None:
            total = total + lc.mask_weight * loss_m
        return total, {"t": t, "view": loss_v, "region": loss_r, "koleo": loss_k, "mask": loss_m}

    def before_clip(epoch: int) -> None:
        cancel_last_layer_gradients(student.head, epoch, cfg.head.freeze_last_layer_epochs)
        if student.dense_head is not None:
            cancel_last_layer_gradients(student.dense_head, epoch, cfg.head.freeze_last_layer_epochs)

    def after_update(i: int, aux: dict) -> None:
        ema_update(teacher, student, float(sched["momentum"][i]))
        t = aux["t"]
        aux["stats"] = collapse_stats(torch.cat(t["cls"]).float(), view_loss.center, float(sched["temp"][i]))
        view_loss.update_center(t["cls"])
        if region_loss is not None:
            region_loss.update_center(t["dense"])
        if mask_loss is not None:
            mask_loss.update_center(t["dense"])
        if warning := monitor.update(aux["stats"]):
            log.info(f"step {i + 1}: {warning}")
        _judge_collapse(guard, i + 1, aux["stats"], cfg.runtime.on_collapse, tr, log)

    def metrics(i: int, aux: dict) -> dict:
        item = {k: aux[k].item() if aux[k] is not None else None for k in ("view", "region", "koleo", "mask")}
        return {"loss_view": item["view"], "loss_region": item["region"], "loss_koleo": item["koleo"],
                **({"loss_mask": item["mask"]} if mask_loss is not None else {}),
                "wd": float(sched["wd"][i]), "momentum": float(sched["momentum"][i]),
                "teacher_temp": float(sched["temp"][i]), **aux["stats"]}

    def epoch_end(epoch: int, at: int) -> None:
        if cfg.runtime.knn_every and (at // tr.steps_per_epoch) % cfg.runtime.knn_every == 0:
            _online_knn(teacher, store, cfg, tr.device, log, at, tr.spec.dist.is_main)

    def state(at: int) -> dict:
        return {"stage": "pretrain", "config": to_dict(cfg), "encoder": nets.meta,
                "student": student.encoder.state_dict(), "teacher": teacher.encoder.state_dict(),
                "student_net": student.state_dict(), "teacher_net": teacher.state_dict(),
                "view_loss": view_loss.state_dict(),
                "region_loss": region_loss.state_dict() if region_loss is not None else {},
                **({"mask_loss": mask_loss.state_dict()} if mask_loss is not None else {})}

    return StepHooks(inputs=_view_inputs(cfg, nets, tr, store), loss=loss, resized=resized, clipped=student.parameters, state=state,
                     replicas=torch.nn.ModuleList([student, teacher]),
                     metrics=metrics, before_clip=before_clip, after_update=after_update, epoch_end=epoch_end)


def _view_inputs(cfg: PretrainConfig, nets: _Nets, tr: Trainer, store: WindowStore):
    """A batch → its views; with ``crops.neighbour_s`` the second global view is cut from a window of the same
    recording a moment away (drawn with the run's generator, so a resumed run draws the same)."""
    neighbours = (TemporalNeighbours(store.recordings, store.starts, tr.dataset.indices, cfg.crops.neighbour_s)
                  if cfg.crops.neighbour_s > 0 else None)

    def inputs(batch: dict) -> list[torch.Tensor]:
        other = None
        if neighbours is not None:
            near = neighbours.draw(batch["index"].numpy(), tr.generator)
            other = torch.from_numpy(store.read_batch(near)).to(tr.device, non_blocking=True)
        return nets.views(batch["x"].to(tr.device, non_blocking=True), tr.generator, other)

    return inputs


COLLAPSE_MIN_STEPS = 100  # fewer optimisation steps than this teach a teacher too little to judge it


def _collapse_check_from(cfg: PretrainConfig, tr: Trainer) -> int:
    """The first step at which a collapsed teacher is a verdict, not a phase: after the LR and teacher-temperature
    warm-ups, 40 % of the run and :data:`COLLAPSE_MIN_STEPS` steps. Every teacher starts near uniform, and a
    healthy one of the tiny recipes was measured still at 0.92 of log K at 20 % of a 560-step run (0.81 at 36 %,
    0.57 at 90 %); a run shorter than the minimum (a smoke test) is never judged."""
    spe = tr.steps_per_epoch
    return max(cfg.optim.warmup_epochs * spe, cfg.loss.warmup_teacher_temp_epochs * spe, tr.total * 2 // 5,
               COLLAPSE_MIN_STEPS)


def _judge_collapse(guard: CollapseGuard, step: int, stats: dict, on_collapse: str, tr: Trainer,
                    log: RunLogger) -> None:
    """Feed the guard; on a verdict (agreed by every rank: one that sees a collapse stops them all), stop the run
    with :class:`CollapseError` (``runtime.on_collapse=stop``: no encoder is written) or warn once."""
    verdict = guard.update(step, stats)
    if tr.spec.dist.distributed and step >= guard.check_from:
        flag = du.all_reduce_max(torch.tensor([1.0 if verdict else 0.0], device=tr.device))
        if flag.item() > 0 and verdict is None:
            guard.done = True
            verdict = f"collapse: another rank's teacher collapsed by step {step} (see its log)"
    if verdict is None:
        return
    if on_collapse == "stop":
        raise CollapseError(f"pretrain: {verdict}; stopped (no encoder written; runtime.on_collapse=warn goes on)")
    log.info(f"step {step}: warning: {verdict}")


def _online_knn(teacher: SSLNet, store: WindowStore, cfg: PretrainConfig, dev, log: RunLogger, step: int,
                is_main: bool) -> None:
    """k-NN macro-F1 of teacher features: labelled windows split by subject (70 % bank / 30 % query)."""
    if is_main and store.has_labels:
        from wearspec.data.splits import subject_split
        from wearspec.evaluate.knn import knn_predict
        from wearspec.evaluate.metrics import macro_f1

        lab = np.flatnonzero(store.labels >= 0)
        sp = subject_split(store.subjects[lab], val_fraction=0.0, test_fraction=0.3, seed=cfg.runtime.seed)
        feats = []
        teacher.eval()
        with torch.inference_mode():
            for a in range(0, len(lab), 256):
                x = torch.from_numpy(store.read_batch(lab[a : a + 256])).to(dev)
                feats.append(teacher.encoder.probe_features(x).float().cpu())
        f, y = torch.cat(feats), torch.from_numpy(store.labels[lab]).long()
        pred, _ = knn_predict(f[sp.train], y[sp.train], f[sp.test], k=20, T=0.07, n_classes=len(store.label_names))
        log.log(step, knn_macro_f1=float(macro_f1(y[sp.test].numpy(), np.asarray(pred))))
    du.barrier()


def _plot_curves(out: Path) -> None:
    from wearspec.evaluate.plots import plot_training_curves

    records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    if records:
        plot_training_curves(records, out / "curves.png", keys=("loss", "entropy", "lr"))
