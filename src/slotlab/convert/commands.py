"""`slotlab convert-tf PATH --task TASK --out DIR` (and `slotlab convert-savi`, registered here).

Both converters check every argument before reading a checkpoint: the numbers, and that --out
is a directory a model can be written into. A directory that already holds a model is replaced
only with --overwrite (its model.safetensors and config.json, written so that a failed write
keeps the old ones); a training run directory or another non-empty directory is refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from slotlab.cli import check_writable_dir, positive_int
from slotlab.errors import ConfigError
from slotlab.tasks import normalize_task

MODEL_FILES = ("model.safetensors", "config.json")
TF_TASKS = ("object_discovery", "set_prediction")  # the official Slot Attention TF code's


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-tf",
        help="convert an official TF checkpoint to model.safetensors + config.json",
        description="Convert an official Slot Attention TF checkpoint (a directory with a "
        "'checkpoint' file, or a ckpt-N prefix) into a slotlab model directory "
        "(model.safetensors + config.json), loadable with slotlab.load_pretrained and usable "
        "with slotlab eval / visualize.",
    )
    p.add_argument("path", help="checkpoint directory (holding a 'checkpoint' file) or a "
                   "ckpt-N prefix")
    p.add_argument("--task", required=True, metavar="TASK",
                   choices=[*TF_TASKS, *(t.replace("_", "-") for t in TF_TASKS)],
                   help="what the checkpoint was trained for: object-discovery (CLEVR6 "
                   "autoencoder) or set-prediction (CLEVR property prediction); SAVi "
                   "checkpoints: slotlab convert-savi")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="model directory to write (new or empty; see --overwrite)")
    p.add_argument("--num-slots", type=positive_int, default=None, metavar="K",
                   help="number of slots (default: the official K of the task)")
    p.add_argument("--num-iterations", type=positive_int, default=None, metavar="T",
                   help="Slot Attention iterations (not stored in the checkpoint; default: the "
                   "official 3)")
    _add_overwrite(p)
    p.set_defaults(func=_checked(run))

    from slotlab.convert.savi import register_savi

    register_savi(sub)
    savi = sub.choices["convert-savi"]
    _add_overwrite(savi)
    savi.set_defaults(func=_checked(savi.get_default("func")))


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model already in --out (its model.safetensors and "
                   "config.json; nothing else there is touched)")


def _checked(run_command: Callable[[argparse.Namespace], int]) -> Callable[
        [argparse.Namespace], int]:
    """`run_command` after checking the arguments every converter shares."""

    def checked(args: argparse.Namespace) -> int:
        for name in ("num_slots", "num_iterations"):
            value = getattr(args, name, None)
            if value is not None and value < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be a positive integer, got {value}")
        check_model_out(Path(args.out), args.overwrite)
        return run_command(args)

    return checked


def check_model_out(out: Path, overwrite: bool = False) -> None:
    """Refuse, in one `ConfigError`, an --out that cannot take a model directory: a file, a
    place that cannot be written, a training run directory, a directory holding a model
    (unless `overwrite`) or other files (unless `overwrite`)."""
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for the model (its "
                          "model.safetensors and config.json are written into it)")
    if out.is_dir():
        names = sorted(p.name for p in out.iterdir())
        if "config.yaml" in names:
            raise ConfigError(f"--out {out} is a training run directory; write the converted "
                              "model to a new directory instead")
        if names and not overwrite:
            if set(MODEL_FILES) & set(names):
                raise ConfigError(f"--out {out} already holds a model; pass --overwrite to "
                                  "replace it, or give a new directory")
            raise ConfigError(f"--out {out} is not empty ({len(names)} entries, no model); "
                              "give a new or empty directory (or pass --overwrite to write "
                              "the model files among them)")
    check_writable_dir(out, f"--out {out}", verb="create")


def run(args: argparse.Namespace) -> int:
    from slotlab.models.pretrained import save_pretrained
    from slotlab.tf_formats.checkpoint import resolve_prefix
    from slotlab.tf_formats.official import load_tf_checkpoint

    overrides = {k: v for k, v in (("num_slots", args.num_slots),
                                   ("num_iterations", args.num_iterations)) if v is not None}
    task = normalize_task(args.task)
    prefix = resolve_prefix(args.path)
    model = load_tf_checkpoint(args.path, task, **overrides)
    out = save_pretrained(model, Path(args.out).expanduser(), source=str(prefix))
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.path} ({task}, {n:,} parameters) -> {out}")
    return 0
