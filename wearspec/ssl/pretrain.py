"""``wearspec pretrain``: EsViT/DINO self-supervised pretraining on a window store.

Run alone (``wearspec pretrain store=… output=…``) or under ``torchrun`` (one process per GPU or
CPU rank; gloo on CPU, nccl on GPU; multi-node through the rendezvous). Read it top to bottom:
config → data → networks → optimiser and schedules → resume → loop → checkpoint/export.

The output folder holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/ckpt-*.pt``
(full state, atomic, keep-last-k; the newest is resumed automatically), and once finished
``teacher_encoder.safetensors`` + ``encoder.json`` and ``curves.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from wearspec.config import from_dict, saved_config_difference, to_dict, to_yaml
from wearspec.data.augment import AugmentConfig, build_sensor_augment, build_spec_augment, make_generator
from wearspec.data.dataset import ResumableSampler, WindowDataset
from wearspec.data.frontend import FrontendConfig, build_frontend
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.models.backbones import BackboneConfig, attention_for_autocast, build_backbone, cpu_autocast_warning
from wearspec.models.encoder import SpectrogramEncoder, encoder_meta
from wearspec.ssl.heads import DINOHead, cancel_last_layer_gradients
from wearspec.ssl.losses import CENTERINGS, DINOLoss, RegionLoss, esvit_loss, koleo_loss
from wearspec.ssl.model import SSLNet, ViewMaker
from wearspec.ssl.monitor import CollapseMonitor, collapse_stats
from wearspec.ssl.multicrop import MultiCrop, MultiCropConfig
from wearspec.ssl.schedules import (ema_update, lr_schedule, momentum_schedule, param_groups,
                                     teacher_temperature_schedule, wd_schedule)
from wearspec.utils import distributed as du
from wearspec.utils.checkpoint import (agreed_latest_checkpoint, check_same_store, data_record, load_checkpoint,
                                       load_scaler_state, save_run_checkpoint, save_weights)
from wearspec.utils.io import write_json, write_text
from wearspec.utils.logging import RunLogger, read_metrics
from wearspec.utils.seed import restore_rank_rng, seed_everything


@dataclass
class HeadConfig:
    """DINO projection head (and the EsViT dense head, same form, when ``region``)."""

    out_dim: int = 4096  # prototypes K (65536 for ImageNet; a few thousand suit small data)
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


@dataclass
class OptimConfig:
    epochs: int = 30
    batch_size: int = 64  # per rank; the LR scales with the global batch (batch_size × ranks)
    lr: float = 5e-4  # at a global batch of 256
    min_lr: float = 1e-6
    warmup_epochs: int = 5
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0  # global gradient-norm clip (0 = off)
    momentum_teacher: float = 0.996  # EMA momentum, cosine → 1


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda[:N]
    amp: str = "none"  # none | bf16 | fp16 (GPU)
    compile: bool = False  # torch.compile the backbones
    num_workers: int = 0
    seed: int = 0
    log_every: int = 1  # steps between metrics.jsonl lines (loss, LR, collapse monitor, windows/s)
    ckpt_every: int = 200  # steps; a checkpoint is also written at every epoch end
    keep_last: int = 3
    max_steps: int = 0  # stop (with a checkpoint) after this many steps in total; 0 = run to the end
    logger: str = "console"  # console | wandb (offline unless WANDB_MODE says otherwise)
    knn_every: int = 0  # epochs between online k-NN checks when the store has labels (0 = off)


@dataclass
class PretrainConfig:
    store: str = ""
    output: str = "runs/pretrain"
    exclude_subjects: list[str] = field(default_factory=list)  # e.g. held-out test subjects
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(drop_path_rate=0.1))
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        if self.runtime.amp not in ("none", "bf16", "fp16"):
            raise WearspecError(f"runtime.amp: expected none, bf16 or fp16, got {self.runtime.amp!r}")
        if self.optim.epochs < 1 or self.optim.batch_size < 1:
            raise WearspecError("optim.epochs and optim.batch_size: expected ≥ 1")
        if self.loss.centering not in CENTERINGS:
            raise WearspecError(f"loss.centering: expected {' or '.join(CENTERINGS)}, got {self.loss.centering!r}")
        if self.loss.sinkhorn_iters < 1:
            raise WearspecError(f"loss.sinkhorn_iters: expected ≥ 1, got {self.loss.sinkhorn_iters}")
        if not self.loss.koleo_weight >= 0:
            raise WearspecError(f"loss.koleo_weight: expected ≥ 0, got {self.loss.koleo_weight}")
        if self.loss.koleo_weight > 0 and self.optim.batch_size < 2:
            raise WearspecError("loss.koleo_weight > 0 needs optim.batch_size ≥ 2 (nearest neighbours in the batch)")


def _net(cfg: PretrainConfig, frontend, in_chans: int, input_size, drop_path: float) -> SSLNet:
    bcfg = from_dict(BackboneConfig, {**to_dict(cfg.backbone), "drop_path_rate": drop_path})
    backbone = build_backbone(bcfg, in_chans, input_size)
    h = cfg.head
    head = DINOHead(backbone.embed_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim, h.nlayers, h.norm_last_layer)
    dense = (DINOHead(backbone.token_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim, h.nlayers, h.norm_last_layer)
             if h.region else None)
    return SSLNet(SpectrogramEncoder(frontend, backbone), head, dense)


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


def run_pretrain(cfg: PretrainConfig) -> dict:
    cfg.validate()
    dist = du.init_distributed(cfg.runtime.device)
    seed_everything(cfg.runtime.seed, dist.rank)
    dev, out = dist.device, Path(cfg.output)
    if cfg.runtime.amp == "fp16" and dev.type != "cuda":
        raise WearspecError(f"runtime.amp=fp16 needs a CUDA device (got {dev}); use bf16 or none")
    ckpt_dir = out / "checkpoints"

    # -- data ---------------------------------------------------------------------------------
    if not cfg.store:
        raise WearspecError("store: the window store to pretrain on is required (store=PATH)")
    store = WindowStore(cfg.store)
    ds = WindowDataset(store, _select(store, cfg.exclude_subjects))
    o = cfg.optim
    sampler = ResumableSampler(len(ds), rank=dist.rank, world_size=dist.world_size, seed=cfg.runtime.seed,
                               drop_last=True)
    steps_per_epoch = sampler.num_samples // o.batch_size
    if steps_per_epoch < 1:
        raise WearspecError(f"{store.path}: {len(ds)} windows give no full batch of {o.batch_size} per rank "
                            f"on {dist.world_size} rank(s); lower optim.batch_size")
    total = o.epochs * steps_per_epoch
    global_batch = o.batch_size * dist.world_size

    # -- networks -----------------------------------------------------------------------------
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
    gen = make_generator(cfg.runtime.seed * 1000 + dist.rank, dev)
    view_loss = DINOLoss(cfg.head.out_dim, cfg.crops.n_global, cfg.loss.student_temp, cfg.loss.center_momentum,
                         cfg.loss.centering, cfg.loss.sinkhorn_iters).to(dev)
    region_loss = (RegionLoss(cfg.head.out_dim, cfg.crops.n_global, cfg.loss.student_temp,
                              cfg.loss.center_momentum).to(dev) if cfg.head.region else None)

    # -- optimiser and per-step schedules (indexed by the global step) ----------------------
    no_decay = {f"encoder.backbone.{n}" for n in student.encoder.backbone.no_weight_decay()}
    groups = param_groups(student, o.weight_decay, no_decay_names=no_decay)
    optimizer = torch.optim.AdamW(groups)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.runtime.amp == "fp16")
    lr_s = lr_schedule(o.lr, global_batch, total, min(total, o.warmup_epochs * steps_per_epoch), o.min_lr)
    wd_s = wd_schedule(total, o.weight_decay, o.weight_decay_end)
    mom_s = momentum_schedule(total, o.momentum_teacher)
    # a warm-up longer than the run is cut at its end: a short run is the start of the long one
    temp_s = teacher_temperature_schedule(cfg.loss.warmup_teacher_temp, cfg.loss.teacher_temp,
                                          cfg.loss.warmup_teacher_temp_epochs, total_epochs=o.epochs,
                                          steps_per_epoch=steps_per_epoch)

    # -- resume or start ----------------------------------------------------------------------
    step = 0
    newest = agreed_latest_checkpoint(ckpt_dir, store)
    if newest is None:
        _check_same_run(out, cfg) if dist.is_main else None
        fit_idx = np.random.default_rng(cfg.runtime.seed).permutation(len(ds))[: cfg.frontend.fit_windows]
        frontend.fit(torch.from_numpy(store.read_batch(np.sort(ds.indices[fit_idx]))).to(dev))
    else:
        _check_same_run(out, cfg) if dist.is_main else None
        state = load_checkpoint(newest, map_location="cpu")  # load_state_dict moves each tensor where it belongs
        check_same_store(state, store, newest)
        student.load_state_dict(state["student_net"])
        teacher.load_state_dict(state["teacher_net"])
        optimizer.load_state_dict(state["optimizer"])
        load_scaler_state(scaler, state["scaler"])
        view_loss.load_state_dict(state["view_loss"])
        if region_loss is not None:
            region_loss.load_state_dict(state["region_loss"])
        sampler.load_state_dict(state["sampler"])
        restore_rank_rng(state["rng"], dist.rank, dist.world_size, gen, newest)
        step = int(state["step"])
    log = RunLogger(out, is_main=dist.is_main, backend=cfg.runtime.logger, config=to_dict(cfg),
                    resume_step=step if newest else 0)
    if dist.is_main:
        write_text(out / "config.yaml", to_yaml(cfg))
        for stale in ckpt_dir.glob(".ckpt-*.tmp-*"):
            stale.unlink(missing_ok=True)
        ranks = f"{dist.world_size} rank(s)" + (f" ({dist.backend})" if dist.backend else "")
        log.info(f"pretrain: {len(ds)} windows, {ranks} × batch {o.batch_size}, "
                 f"{steps_per_epoch} steps/epoch, {total} steps; input {tuple(input_size)}"
                 + (f"; resumed from {newest.name} (step {step})" if newest else ""))
        if newest:
            log.log(step, event="resumed", checkpoint=newest.name)
    model = DDP(student) if dist.distributed else student  # DDP gives every rank rank 0's initial student
    if newest is None:
        teacher.load_state_dict(student.state_dict())  # so the teachers start equal on every rank too
    fwd_s, fwd_t = (torch.compile(model), torch.compile(teacher)) if cfg.runtime.compile else (model, teacher)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.runtime.amp)
    for net in (student, teacher):
        attention_for_autocast(net, dev.type, amp_dtype)
    if dist.is_main and (warning := cpu_autocast_warning(dev.type, amp_dtype)):
        log.info(f"warning: {warning}")
    monitor = CollapseMonitor()

    def save(at: int) -> None:
        save_run_checkpoint(lambda: {
            "stage": "pretrain", "step": at, "epoch": at // steps_per_epoch, "config": to_dict(cfg),
            "encoder": meta, "student": student.encoder.state_dict(), "teacher": teacher.encoder.state_dict(),
            "student_net": student.state_dict(), "teacher_net": teacher.state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "view_loss": view_loss.state_dict(),
            "region_loss": region_loss.state_dict() if region_loss is not None else {},
            "sampler": sampler.state_dict(),
            "data": data_record(store, len(ds)),
        }, ckpt_dir, at, cfg.runtime.keep_last, torch.nn.ModuleList([student, teacher]), gen, log)

    # -- the loop -----------------------------------------------------------------------------
    stop_at = min(total, cfg.runtime.max_steps) if cfg.runtime.max_steps else total
    bar = tqdm(total=stop_at, initial=step, desc="pretrain", unit="step",
               disable=not (dist.is_main and __import__("sys").stderr.isatty()))
    t0, seen = time.perf_counter(), 0
    student.train()
    teacher.train(False)
    while step < stop_at:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch)
        # A private generator: creating a DataLoader iterator must not draw from the global RNG,
        # or a resumed run (which creates one mid-epoch) would diverge from an uninterrupted one.
        loader = DataLoader(ds, batch_size=o.batch_size, sampler=sampler, drop_last=True,
                            num_workers=cfg.runtime.num_workers, persistent_workers=False,
                            pin_memory=dev.type == "cuda",  # so that .to(dev, non_blocking=True) is asynchronous
                            generator=torch.Generator().manual_seed(cfg.runtime.seed + epoch))
        for batch in loader:
            for g in optimizer.param_groups:
                g["lr"] = float(lr_s[step]) * float(g.get("lr_scale", 1.0))  # Python floats: the optimizer
                g["weight_decay"] = float(wd_s[step]) if g.get("apply_wd", True) else 0.0  # state must load safely
            x = batch["x"].to(dev, non_blocking=True)
            crops = views(x, gen)
            with torch.autocast(dev.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                s = fwd_s(crops)
                with torch.no_grad():
                    t = fwd_t(crops[: cfg.crops.n_global])
                loss_v = view_loss(s["cls"], t["cls"], float(temp_s[step]))
                loss_r = (region_loss(s["tokens"], s["dense"], t["tokens"], t["dense"], float(temp_s[step]))
                          if region_loss is not None else None)
                loss = (esvit_loss(loss_v, loss_r, cfg.loss.view_weight, cfg.loss.region_weight)
                        if loss_r is not None else loss_v)
                loss_k = (torch.stack([koleo_loss(p) for p in s["pooled"][: cfg.crops.n_global]]).mean()
                          if cfg.loss.koleo_weight > 0 else None)
                if loss_k is not None:
                    loss = loss + cfg.loss.koleo_weight * loss_k
            bad = du.all_reduce_max(torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=dev))
            if bad.item() > 0:
                raise WearspecError(f"pretrain: non-finite loss at step {step} (epoch {epoch}); nothing was saved "
                                    f"for this step and the newest checkpoint in {ckpt_dir} is intact. "
                                    "Lower optim.lr, raise optim.warmup_epochs or use runtime.amp=none")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            # the last layers' gradients are dropped in the first epoch(s), before the global norm is taken
            cancel_last_layer_gradients(student.head, epoch, cfg.head.freeze_last_layer_epochs)
            if student.dense_head is not None:
                cancel_last_layer_gradients(student.dense_head, epoch, cfg.head.freeze_last_layer_epochs)
            grad_norm = (torch.nn.utils.clip_grad_norm_(student.parameters(), o.clip_grad)
                         if o.clip_grad > 0 else torch.tensor(0.0))
            scaler.step(optimizer)
            scaler.update()
            ema_update(teacher, student, float(mom_s[step]))
            t_cls = torch.cat(t["cls"]).float()
            stats = collapse_stats(t_cls, view_loss.center, float(temp_s[step]))
            view_loss.update_center(t["cls"])
            if region_loss is not None:
                region_loss.update_center(t["dense"])
            step += 1
            sampler.advance(o.batch_size)
            seen += global_batch
            bar.update(1)
            warning = monitor.update(stats)
            if warning:
                log.info(f"step {step}: {warning}")
            if dist.is_main and (step % cfg.runtime.log_every == 0 or step == stop_at):
                rate = seen / (time.perf_counter() - t0)
                log.log(step, epoch=epoch, loss=loss.item(), loss_view=loss_v.item(),
                        loss_region=loss_r.item() if loss_r is not None else None,
                        loss_koleo=loss_k.item() if loss_k is not None else None, lr=float(lr_s[step - 1]),
                        wd=float(wd_s[step - 1]), momentum=float(mom_s[step - 1]),
                        teacher_temp=float(temp_s[step - 1]), grad_norm=float(grad_norm),
                        windows_per_s=round(rate, 1), **stats)
            end_of_epoch = step % steps_per_epoch == 0
            if step % cfg.runtime.ckpt_every == 0 or end_of_epoch or step == stop_at:
                save(step)
            if end_of_epoch and cfg.runtime.knn_every and (step // steps_per_epoch) % cfg.runtime.knn_every == 0:
                _online_knn(teacher, store, cfg, dev, log, step, dist.is_main)
            if end_of_epoch or step >= stop_at:
                break
    bar.close()

    # -- finish ---------------------------------------------------------------------------------
    summary = {"steps": step, "total_steps": total, "finished": step >= total, "output": str(out)}
    if dist.is_main and step >= total:
        save_weights(teacher.encoder.state_dict(), out / "teacher_encoder.safetensors", {"stage": "pretrain"})
        write_json(out / "encoder.json", meta)
        _plot_curves(out)
    log.close()
    du.barrier()
    du.cleanup()
    return summary


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
