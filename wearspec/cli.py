"""The ``wearspec`` command: one subcommand per stage.

Every subcommand takes ``--config FILE.yaml`` (or a shipped recipe by name: ``wearspec configs``) and trailing
``key.sub=value`` overrides. Bad input is reported on one line (``wearspec: error: …``) with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from dataclasses import fields
from pathlib import Path

from wearspec import __version__
from wearspec.errors import WearspecError, write_error


def _check_output(output: Path, key: str) -> None:
    """An output folder must be a folder (or not exist yet) under folders, not under a regular file."""
    if output.exists() and not output.is_dir():
        raise WearspecError(f"{key} {output}: is a file; expected a folder to write into (or a new name)")
    for parent in output.parents:
        if parent.exists():
            if not parent.is_dir():
                raise WearspecError(f"{key} {output}: {parent} is a file, not a folder; expected a folder path")
            break


BOOKKEEPING = ("config.yaml", "metrics.jsonl", "*.lock", "*.sha256")  # what a run writes before its results


def _only_bookkeeping(folder: Path) -> bool:
    """Whether a folder holds nothing but a run's own bookkeeping (config.yaml, metrics.jsonl, locks): safe to
    remove after a failure. Anything else (a checkpoint to resume from, weights, files someone else put there
    meanwhile) keeps the folder."""
    return all(p.is_dir() or any(p.match(g) for g in BOOKKEEPING) for p in folder.rglob("*"))


@contextlib.contextmanager
def _writing(output: str | os.PathLike | None, key: str = "output"):
    """Run a command that writes ``output``: check the path first; on bad input or a full (or unwritable) disk,
    one line naming the path, and the folders this command created are removed again when they hold nothing but
    its bookkeeping (atomic writes leave no half-written file; a run that saved checkpoints can resume; what
    anyone else put there stays)."""
    if not output:
        yield
        return
    out = Path(output)
    _check_output(out, key)
    created = next((p for p in reversed([out, *out.parents]) if not os.path.lexists(p)), None)
    try:
        yield
    except (OSError, RuntimeError, WearspecError) as e:
        err = e if isinstance(e, WearspecError) else write_error(e, out)
        if err is None:
            raise
        if created is not None and created.is_dir() and _is_rank0() and _only_bookkeeping(created):
            shutil.rmtree(created, ignore_errors=True)
        if err is e:
            raise
        raise err from None


def _prepare(args: argparse.Namespace) -> int:
    from wearspec.config import load_config, to_yaml
    from wearspec.data.prepare import PrepareConfig
    from wearspec.data.inspect import format_summary
    from wearspec.data.prepare import prepare

    overrides = list(args.overrides)
    if args.overwrite:
        overrides.append("store.overwrite=true")
    overrides += ([f"jobs={args.jobs}"] if args.jobs is not None else []) + (
        [f"shard={args.shard}"] if args.shard else []) + (["keep_going=true"] if args.keep_going else [])
    cfg = load_config(PrepareConfig, args.config, overrides)
    if args.reader != "synthetic" and args.input is None:
        raise WearspecError(f"prepare {args.reader}: an input path is required")
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    with _writing(args.output, "-o/--output"):
        store, reused = prepare(args.reader, args.input, args.output, cfg)
    if reused:
        print(f"{args.output}: store is up to date (same inputs and settings); nothing to do")
    else:
        print(format_summary(store.summary()))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from wearspec.data.inspect import format_summary, spectrogram_grid
    from wearspec.data.store import WindowStore

    if args.per_class < 1:
        raise WearspecError(f"inspect --per-class: expected an integer ≥ 1 example, got {args.per_class}")
    if args.png and not args.no_png:
        _check_output(Path(args.png).parent, "--png")
        if Path(args.png).is_dir():
            raise WearspecError(f"inspect --png {args.png}: is a folder; expected a .png file name")
    store = WindowStore(args.store)  # checks the manifest and the index (its checksum too)
    summary = store.summary()
    if args.verify:
        summary["verify"] = store.verify()  # every shard: checksum and NaN/Inf; a problem is the error line
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    if not args.no_png:
        png = Path(args.png) if args.png else store.path / "spectrograms.png"
        spectrogram_grid(store, png, per_class=args.per_class)
        print(f"spectrogram grid: {png}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _run_recipe(args: argparse.Namespace, module: str, config: str, runner: str, keys: tuple[str, ...] | None) -> int:
    """Load ``config`` (YAML + overrides), print it or run ``runner``; rank 0 prints the summary's ``keys``."""
    import importlib

    from wearspec.config import load_config, to_yaml

    from wearspec.utils.integrity import output_lock

    mod = importlib.import_module(module)
    cfg = load_config(getattr(mod, config), args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    if config in ("PretrainConfig", "FinetuneConfig", "DemoConfig") and not str(cfg.output).strip():
        raise WearspecError("output: expected a folder to write the run into (output=PATH), got an empty path")
    output = getattr(cfg, "output", "")
    # the output folder is this command's alone while it runs (under torchrun rank 0 holds it for all ranks)
    with _writing(output or None), output_lock(output, enabled=bool(output) and _is_rank0()):
        summary = getattr(mod, runner)(cfg)
    if keys is not None and _is_rank0():
        print(json.dumps({k: summary.get(k) for k in keys} if keys else summary, default=str))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    return _run_recipe(args, "wearspec.ssl.pretrain", "PretrainConfig", "run_pretrain", ())


def _probe(args: argparse.Namespace) -> int:  # run_probe prints its own table
    return _run_recipe(args, "wearspec.evaluate.probe", "ProbeConfig", "run_probe", None)


def _finetune(args: argparse.Namespace) -> int:
    return _run_recipe(args, "wearspec.finetune.recipe", "FinetuneConfig", "run_finetune",
                       ("finished", "output", "report"))


def _export(args: argparse.Namespace) -> int:
    return _run_recipe(args, "wearspec.deploy.export", "ExportConfig", "run_export", ("bundle", "opset", "parity", "int8"))


def _demo(args: argparse.Namespace) -> int:  # run_demo reports each step itself
    return _run_recipe(args, "wearspec.demo.recipe", "DemoConfig", "run_demo", None)


# engine and stream import only wearspec.deploy.runtime (numpy, onnxruntime, tensorrt, cuda-python):
# they run on a Jetson without torch.


def _engine_inputs(args: argparse.Namespace):
    """The flags of ``engine``, checked before TensorRT (or a bundle) is touched: run's windows, bench's batch
    sizes and the counts."""
    from wearspec.deploy.runtime.trt_checks import check_profile

    if args.action == "build":
        check_profile(args.min_batch, args.opt_batch, args.max_batch)
        if args.workspace_mb < 1:
            raise WearspecError(f"engine build --workspace-mb: expected ≥ 1 MB, got {args.workspace_mb}")
        return None
    if args.action == "run":
        import numpy as np

        from wearspec.utils.io import load_npy

        if not args.input:
            raise WearspecError("engine run: --input WINDOWS.npy (n, C, T) is required")
        x = load_npy(args.input, "windows (n, C, T)")
        if x.dtype.kind not in "biuf" or x.ndim != 3 or x.shape[0] == 0:
            raise WearspecError(f"{args.input}: expected windows (n, C, T) of numbers with n ≥ 1, got shape "
                                f"{x.shape} of {x.dtype}")
        if not np.isfinite(x).all():
            rows = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
            raise WearspecError(f"{args.input}: windows {rows[:5].tolist()}{' …' if rows.size > 5 else ''} hold "
                                "NaN or Inf; expected finite values")
        return x.astype(np.float32)
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise WearspecError(f"engine bench --batch-sizes: expected comma-separated integers ≥ 1 (e.g. 1,8,32), got "
                            f"{args.batch_sizes!r}")
    if args.warmup < 0 or args.iterations < 1:
        raise WearspecError(f"engine bench: expected --warmup ≥ 0 and --iterations ≥ 1, got {args.warmup}, "
                            f"{args.iterations}")
    return sizes


def _engine(args: argparse.Namespace) -> int:
    from wearspec.deploy.runtime.backends import load_backend

    checked = _engine_inputs(args)
    if args.action == "build":
        from wearspec.deploy.runtime.trt import build_engine_from_bundle
        from wearspec.utils.integrity import output_lock

        with output_lock(args.bundle):  # the engine is written into the bundle: not while another writes it
            meta = build_engine_from_bundle(
                args.bundle, precision=args.precision or "fp16", engine_path=args.engine, onnx_path=args.onnx,
                min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
                workspace_mb=args.workspace_mb, **({"timing_cache": args.timing_cache} if args.timing_cache else {}))
        print(json.dumps(meta, indent=2, default=str))
        return 0
    backend = load_backend(args.bundle, args.backend, engine=args.engine, precision=args.precision)
    if args.action == "run":
        probs = backend.infer(checked)
        labels = backend.labels
        print("index,label,probability")
        for i, p in enumerate(probs):
            k = int(p.argmax())
            print(f"{i},{labels[k]},{p[k]:.4f}")
        return 0
    from wearspec.deploy.runtime.bench import benchmark, format_table

    rows = benchmark(backend, batch_sizes=checked, warmup=args.warmup, iterations=args.iterations)
    print(format_table(rows))
    return 0


def _stream(args: argparse.Namespace) -> int:
    from wearspec.deploy.runtime.stream import StreamConfig, run_stream

    # the flags are StreamConfig's fields by name (see _add_stream); the rest keep their defaults
    cfg = StreamConfig(**{f.name: getattr(args, f.name) for f in fields(StreamConfig) if hasattr(args, f.name)})
    run_stream(args.bundle, args.source, cfg)
    return 0


def _configs(args: argparse.Namespace) -> int:
    """List the shipped recipes with their purpose, or print one (to copy and edit)."""
    from wearspec.config import config_purpose, resolve_config, shipped_configs

    if args.name:
        print(resolve_config(args.name).read_text(), end="")
        return 0
    shipped = shipped_configs()
    width = max(map(len, shipped), default=0)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {config_purpose(path)}")
    return 0


def _recipe_parser(sub, name: str, func, help: str, description: str, example: str) -> None:
    p = sub.add_parser(name, help=help, description=description, epilog=f"example: {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML recipe: a file, or a shipped recipe by name (`wearspec configs` lists them)")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.epochs=10")
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wearspec", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"wearspec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(sub)
    _add_recipes(sub)
    _add_engine(sub)
    _add_stream(sub)
    pc = sub.add_parser("configs", help="list the recipes that ship with wearspec, or print one",
                        description="The recipes shipped inside the package, for --config NAME (a path still "
                        "works). With a NAME, print that recipe, e.g. to start your own: "
                        "wearspec configs pretrain_vit_tiny > mine.yaml")
    pc.add_argument("name", nargs="?", help="a recipe to print")
    pc.set_defaults(func=_configs)
    return p


def _add_data_commands(sub) -> None:
    """``prepare`` (dataset → window store) and ``inspect`` (a store's counts and spectrograms)."""
    from wearspec.data.readers import READERS

    pp = sub.add_parser(
        "prepare",
        help="turn a dataset (native format) into a window store",
        description="Read a dataset in its native format, resample, cut windows and write a window store. "
        "Settings: --config FILE.yaml and key=value overrides, e.g. window.rate=50 window.length_s=5 "
        "window.hop_s=2.5 window.nan_policy=interpolate store.dtype=float16.",
    )
    pp.add_argument("reader", choices=list(READERS), help="dataset format")
    pp.add_argument("input", nargs="?", help="dataset file or folder (not needed for 'synthetic')")
    pp.add_argument("-o", "--output", required=True, help="store folder to write")
    pp.add_argument("--config", help="YAML file with prepare settings")
    pp.add_argument("--overwrite", action="store_true", help="replace a different store in the output folder")
    pp.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    pp.add_argument("--jobs", type=int, help="files prepared in parallel worker processes (the jobs= setting)")
    pp.add_argument("--shard", metavar="I/N", help="prepare only the I-th of N shares of the file list, as parts "
                    "a later run without --shard merges (the shard= setting)")
    pp.add_argument("--keep-going", action="store_true", help="skip (and list) files that fail instead of "
                    "stopping (keep_going=true)")
    pp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    pp.set_defaults(func=_prepare)

    pi = sub.add_parser("inspect", help="counts per subject/label and a PNG of example spectrograms",
                        description="Summarise a window store and draw example spectrograms per class.")
    pi.add_argument("store", help="store folder")
    pi.add_argument("--png", help="where to write the spectrogram grid (default STORE/spectrograms.png)")
    pi.add_argument("--per-class", type=int, default=3, help="examples per class in the grid")
    pi.add_argument("--no-png", action="store_true", help="only print the counts")
    pi.add_argument("--json", action="store_true", help="print the summary as JSON")
    pi.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                    help="read every shard: check it against the checksum recorded when the store was written, and "
                    "that every value is finite (exit 2 naming the file otherwise); on by default, --no-verify "
                    "only reads the index")
    pi.set_defaults(func=_inspect)


def _add_recipes(sub) -> None:
    """The stage recipes that take ``--config`` and ``key=value`` overrides: pretrain, probe, finetune, export,
    demo."""
    _recipe_parser(
        sub, "pretrain", _pretrain, "EsViT/DINO self-supervised pretraining (alone or under torchrun)",
        "Pretrain a ViT or Swin backbone on the spectrograms of a window store with EsViT/DINO. Runs alone or "
        "under torchrun (gloo on CPU, nccl on GPU). Resumes from the newest checkpoint in OUTPUT/checkpoints.",
        "torchrun --standalone --nproc_per_node=2 -m wearspec pretrain --config configs/pretrain_vit_tiny.yaml "
        "store=data/synth output=runs/pt",
    )
    _recipe_parser(
        sub, "probe", _probe, "linear probe and k-NN of frozen features, subject-wise",
        "Evaluate a pretrained backbone: frozen features → weighted k-NN and a linear probe (hyper-parameters "
        "selected on validation subjects only); accuracy, macro-F1 and Cohen's kappa pooled and per subject.",
        "wearspec probe checkpoint=runs/pt store=data/synth output=runs/pt/probe",
    )
    _recipe_parser(
        sub, "finetune", _finetune, "DeSepTr fine-tuning: CNN teacher, then a distilled ViT/Swin/SepTr student",
        "Train a CNN teacher (ResNet-18 on spectrograms), then a transformer student with class + distillation "
        "heads (DeiT/DeSepTr), optionally initialised from a pretrain checkpoint; subject-wise evaluation. Runs alone "
        "or under torchrun; resumes from the newest checkpoint of the unfinished stage.",
        "wearspec finetune --config configs/finetune_deseptr.yaml store=data/synth output=runs/ft",
    )
    _recipe_parser(
        sub, "export", _export, "ONNX bundle with the spectrogram inside (+ INT8 Q/DQ), gated by parity",
        "Export a fine-tuned classifier (raw windows → probabilities, the conv-DFT front end inside the graph) "
        "to a bundle: model.onnx, model.int8.onnx, bundle.json. Refuses to write a bundle that fails the ONNX "
        "checker, the TensorRT 10.3 op-set check or parity against PyTorch.",
        "wearspec export checkpoint=runs/ft/holdout/student store=data/synth output=runs/bundle",
    )
    _recipe_parser(
        sub, "demo", _demo, "the whole pipeline on the embedded data (or your store), ending in a report",
        "prepare (synthetic, or store=PATH) → EsViT/DINO pretraining under torchrun → probe vs random init → DeSepTr "
        "fine-tuning from the SSL backbone → ONNX/INT8 bundle → streamed replay → TensorRT engine (when present) → "
        "OUTPUT/report/report.html and report.md. Re-running skips finished steps and resumes training.",
        "wearspec demo output=runs/demo      |  wearspec demo store=data/mine output=runs/mine pretrain.optim.epochs=20",
    )


def _add_engine(sub) -> None:
    """``engine build|run|bench``: TensorRT on the target device (run and bench with ONNX Runtime too)."""
    pe = sub.add_parser("engine", help="TensorRT engine: build on the device, run, benchmark",
                        description="Build a TensorRT engine from a bundle on the target GPU (engines are tied to the "
                        "GPU and TensorRT version), run it on windows, or benchmark latency like trtexec.")
    pe.add_argument("action", choices=["build", "run", "bench"])
    pe.add_argument("bundle", help="bundle folder written by wearspec export")
    pe.add_argument("--precision", default=None, choices=["fp32", "fp16", "int8"],
                    help="engine precision (build default fp16); with --backend onnxruntime: fp32 or int8")
    pe.add_argument("--engine", help="engine file (default BUNDLE/model.<precision>.engine)")
    pe.add_argument("--onnx", help="build from this ONNX instead of the bundle's (e.g. an FP16 ONNX for TensorRT 11)")
    pe.add_argument("--backend", default="tensorrt", choices=["tensorrt", "onnxruntime"], help="run/bench backend")
    pe.add_argument("--min-batch", type=int, default=1)
    pe.add_argument("--opt-batch", type=int, default=8)
    pe.add_argument("--max-batch", type=int, default=32)
    pe.add_argument("--workspace-mb", type=int, default=1024)
    pe.add_argument("--timing-cache", help="timing cache file (default BUNDLE/timing.cache)")
    pe.add_argument("--input", help="run: windows as .npy (n, C, T)")
    pe.add_argument("--batch-sizes", default="1,8,32", help="bench: comma-separated batch sizes")
    pe.add_argument("--warmup", type=int, default=10)
    pe.add_argument("--iterations", type=int, default=100)
    pe.set_defaults(func=_engine)


def _add_stream(sub) -> None:
    """``stream``: the flags are :class:`~wearspec.deploy.runtime.stream.StreamConfig`'s fields (same names and
    defaults), so :func:`_stream` builds the config from them by name."""
    from wearspec.deploy.runtime.base import BACKENDS
    from wearspec.deploy.runtime.stream import NAN_POLICIES, StreamConfig

    d = StreamConfig()
    ps = sub.add_parser("stream", help="classify a live or replayed sensor stream with a bundle",
                        description="Feed samples (CSV/TSV/.npy replay, or '-' for stdin) through a ring buffer; "
                        "classify the newest window every hop; print time_s,label,probability per prediction and "
                        "latency statistics at the end.")
    ps.add_argument("bundle")
    ps.add_argument("--source", required=True, help="CSV/TSV/.npy file (rows = samples, columns = channels) or -")
    ps.add_argument("--backend", default=d.backend, choices=list(BACKENDS))
    ps.add_argument("--engine", default=d.engine)
    ps.add_argument("--precision", default=d.precision, choices=["fp32", "fp16", "int8"])
    ps.add_argument("--smoothing", type=int, default=d.smoothing, help="moving average over this many predictions")
    ps.add_argument("--nan-policy", default=d.nan_policy, choices=list(NAN_POLICIES))
    ps.add_argument("--max-nan-fraction", type=float, default=d.max_nan_fraction,
                    help="skip policy: drop windows above this")
    ps.add_argument("--max-gap-s", type=float, default=d.max_gap_s,
                    help="reset the buffer at timestamp gaps longer than this")
    ps.add_argument("--hop", type=int, default=d.hop, help="samples between predictions (default: the bundle's hop)")
    ps.add_argument("--chunk", type=int, default=d.chunk, help="samples per chunk read from the source")
    ps.set_defaults(func=_stream)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come anywhere after the subcommand (also after options such as -o), which
    # argparse's positional matching does not allow: collect the leftover KEY=VALUE items.
    args, extra = parser.parse_known_args(argv)
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    # A KEY=VALUE that landed in the optional input slot is an override too.
    if getattr(args, "input", None) and "=" in args.input and not Path(args.input).exists():
        args.overrides.insert(0, args.input)
        args.input = None
    try:
        return int(args.func(args) or 0)
    except WearspecError as e:
        print(f"wearspec: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the command reads or writes (the commands name their own where they can)
        err = write_error(e)
        if err is None and not (e.filename and e.strerror):
            raise
        print(f"wearspec: error: {err or f'{e.filename}: {e.strerror}'}", file=sys.stderr)
        return 2
    except MemoryError as e:
        print(f"wearspec: error: out of memory ({e}); check the sizes in the settings (rates, lengths, batch "
              "sizes)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wearspec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
