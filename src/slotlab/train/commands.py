"""`slotlab train`, `slotlab eval` and `slotlab visualize`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import typing
from pathlib import Path
from typing import Any

from slotlab.errors import ConfigError
from slotlab.models import CONFIGS
from slotlab.tasks import normalize_task
from slotlab.train.config import TrainConfig, load_preset, make_config


def _resolution(text: str) -> list[int]:
    """"64" -> [64, 64]; "64x48" -> [64, 48] (height first)."""
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"resolution must look like 64 or 64x48 (height x width), got {text!r}")
    return values * 2 if len(values) == 1 else values


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 32,32,32, got {text!r}") from None


# Training fields that are not flags (set by the command or the preset) and flag aliases.
NOT_FLAGS = {"task", "data", "preset", "model", "data_options"}
ALIASES = {"learning_rate": ["--lr"], "implicit_differentiation": ["--implicit-diff"]}


def _add_field_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                    f: dataclasses.Field, dest: str) -> None:
    """One flag for a config field: its type and help come from the dataclass."""
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args \
        else hint
    names = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": f.metadata.get("help")}
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(base) is typing.Literal:
        kwargs["choices"] = list(typing.get_args(base))
    elif typing.get_origin(base) is tuple:
        kwargs.update(type=_resolution if f.name == "resolution" else _int_list,
                      metavar="H[xW]" if f.name == "resolution" else "N,N,...")
    elif base in (int, float, str):
        kwargs.update(type=base, metavar=f.name.upper())
    else:
        return
    p.add_argument(*names, **kwargs)


def model_fields() -> dict[str, list[str]]:
    """Each model field that has a flag -> the tasks whose model has it."""
    fields: dict[str, list[str]] = {}
    for task, cls in CONFIGS.items():
        for f in dataclasses.fields(cls):
            fields.setdefault(f.name, []).append(task)
    return fields


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (or resume a run directory)",
                       description="Train object discovery, set prediction or SAVi on video. "
                       "Running the same command on an existing run directory resumes it. Unset "
                       "options come from the preset, else the official settings.")
    p.add_argument("task", choices=["object-discovery", "set-prediction", "video"],
                   help="what to train: object discovery (autoencoder), set prediction, or "
                   "video (SAVi)")
    p.add_argument("--data", metavar="SPEC",
                   help="data spec, e.g. procedural, procedural-sprites, clevr:PATH, folder:DIR")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--preset", help="named settings from configs/ (e.g. cpu-sprites, clevr6) "
                   "or a YAML file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    run = p.add_argument_group("training")
    for f in dataclasses.fields(TrainConfig):
        if f.name not in NOT_FLAGS:
            _add_field_flag(run, TrainConfig, f, f.name)
    model = p.add_argument_group("model (ObjectDiscoveryConfig / SetPredictionConfig / "
                                 "SAViConfig fields)")
    merged = {**{f.name: (c, f) for c in reversed(list(CONFIGS.values()))
                 for f in dataclasses.fields(c)}}
    for name, (cls, f) in merged.items():
        _add_field_flag(model, cls, f, f"model.{name}")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="evaluate a run or model directory",
                       description="Evaluate a run directory (its newest checkpoint or final "
                       "model) or a model directory on held-out data; writes PATH/eval.json.")
    e.add_argument("path", help="RUN_DIR or MODEL_DIR")
    e.add_argument("--data", help="data spec (default: the run's training data)")
    e.add_argument("--split", default=None,
                   help="split to score (default: val; a folder given with --data: all)")
    e.add_argument("--checkpoint", metavar="STEP|PATH",
                   help="score this checkpoint of the run (default: the newest)")
    e.add_argument("--num", type=int, default=None, help="number of images (default: all)")
    e.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    e.add_argument("--seed", type=int, default=0, help="slot-noise seed")
    e.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    e.add_argument("--num-slots", type=int, help="evaluate with another number of slots")
    e.add_argument("--num-iterations", type=int, help="evaluate with another number of iterations")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=run_eval)

    try:
        from slotlab.train.visualize import register as register_visualize
    except ImportError:
        return
    register_visualize(sub)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the preset, then every flag that was given (checked against the task's
    model config: a flag of the other task's model is one error line)."""
    task = normalize_task(args.task)
    base = load_preset(args.preset) if args.preset else {}
    if normalize_task(base.get("task", task)) != task:
        raise ConfigError(f"preset {args.preset!r} is for {base['task']}, not {task}")
    given = {k: v for k, v in vars(args).items() if v is not None}
    model = {k.split(".", 1)[1]: v for k, v in given.items() if k.startswith("model.")}
    tasks_of = model_fields()
    for name in model:
        if task not in tasks_of[name]:
            raise ConfigError(f"--{name.replace('_', '-')} is an option of the "
                              f"{tasks_of[name][0].replace('_', '-')} model, not of "
                              f"{task.replace('_', '-')}")
    data_options = {"resolution": model["resolution"]} if "resolution" in model else {}
    training = {f.name: given[f.name] for f in dataclasses.fields(TrainConfig)
                if f.name not in NOT_FLAGS and f.name in given}
    cfg = make_config(args.preset, task=task, data=args.data, model=model,
                      data_options=data_options, **training)
    dropped = sorted(set(base.get("data_options") or {}) - set(cfg.data_options.kwargs()))
    if args.data and dropped:
        print(f"note: the preset's data options {', '.join(dropped)} are for its own data; "
              f"they are left out with {args.data}", file=sys.stderr)
    return cfg


def run_train(args: argparse.Namespace) -> int:
    from slotlab.train.loop import train

    cfg = train_config_from_args(args)
    result = train(cfg, Path(args.out), progress=not args.no_progress)
    if result:
        print(final_table(cfg.task, result))
    return 0


def final_table(task: str, metrics: dict) -> str:
    """The run's last evaluation beside the untrained model's: the task's headline metrics."""
    from slotlab.train.evaluate import HEADLINE

    untrained = metrics.get("untrained") or {}
    rows = [("metric", "trained", "untrained")]
    for key, name in HEADLINE[task]:
        if key in metrics:
            rows.append((name, f"{metrics[key]:.4f}", f"{untrained[key]:.4f}"
                         if key in untrained else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def format_table(metrics: dict) -> str:
    rows = [(k, f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else str(v))
            for k, v in metrics.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run_eval(args: argparse.Namespace) -> int:
    from slotlab.data import build_dataset
    from slotlab.data.build import kind_options, parse_spec
    from slotlab.io import atomic_write
    from slotlab.train.checkpoint import load_model
    from slotlab.train.config import config_from_dict
    from slotlab.train.evaluate import (
        HEADLINE,
        data_options,
        evaluate,
        headline,
        num_scored,
        untrained_figures,
        untrained_model,
    )
    from slotlab.train.runtime import resolve_device, reuse_freed_memory

    for name in ("num", "batch_size", "num_slots", "num_iterations"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    device = resolve_device(args.device)
    reuse_freed_memory(None, device)
    model, info = load_model(args.path, device=device, checkpoint=args.checkpoint)
    spec = args.data or info["data"]
    if not spec:
        raise ConfigError(f"{args.path} does not record its data: pass --data SPEC")
    kind = parse_spec(spec)[0]
    split = args.split or ("all" if args.data and kind == "folder" else "val")
    cfg = config_from_dict(info["config"]) if info["config"] else None
    if cfg is not None:
        options = data_options(cfg, spec)
    else:
        options = {"resolution": model.resolution} if "resolution" in kind_options(spec) else {}
    if "num" in options:  # the run's `num` sized its training split
        if kind == "cache":  # a cache's split holds what it holds; --num takes the first
            del options["num"]
        elif args.num:
            options["num"] = min(int(options["num"]), args.num)
    dataset = build_dataset(spec, split, info["task"], **options)
    settings = dict(num=args.num, batch_size=args.batch_size, seed=args.seed, device=device,
                    num_slots=args.num_slots, num_iterations=args.num_iterations)
    metrics = evaluate(model, dataset, info["task"], **settings)
    fresh = untrained_model(info["task"], model.config, cfg.seed if cfg else 0)
    metrics["untrained"] = untrained_figures(
        evaluate(fresh.to(device), dataset, info["task"], **settings))
    result = {"path": str(args.path), "task": info["task"], "data": spec, "split": split,
              "step": info["step"], **metrics}
    out = Path(args.path) / "eval.json"
    text = json.dumps(result, indent=2) + "\n"
    atomic_write(out, lambda f: f.write(text.encode()))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{spec} {split}, {num_scored(metrics)}, step {info['step']}: "
              + headline(info["task"], metrics))
        shown = ["path", "step", "num_images", "num_videos",
                 *(k for k, _ in HEADLINE[info["task"]])]
        print(format_table({k: result[k] for k in shown if k in result}))
        print(f"(every figure in {out})", file=sys.stderr)
    return 0
