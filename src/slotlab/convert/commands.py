"""`slotlab convert-tf PATH --task TASK --out DIR`."""

from __future__ import annotations

import argparse

from slotlab.tasks import TASKS, normalize_task


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-tf",
        help="convert an official TF checkpoint to model.safetensors + config.json",
        description="Convert an official Slot Attention TF checkpoint (a directory with a "
        "'checkpoint' file, or a ckpt-N prefix) into a slotlab model directory.",
    )
    p.add_argument("path", help="checkpoint directory or ckpt-N prefix")
    p.add_argument("--task", required=True,
                   choices=[*TASKS, *(t.replace("_", "-") for t in TASKS)])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-slots", type=int, default=None, help="override the official K")
    p.add_argument("--num-iterations", type=int, default=None)
    p.set_defaults(func=run)

    from slotlab.convert.savi import register_savi

    register_savi(sub)


def run(args: argparse.Namespace) -> int:
    from slotlab.models.pretrained import save_pretrained
    from slotlab.tf_formats.checkpoint import resolve_prefix
    from slotlab.tf_formats.official import load_tf_checkpoint

    overrides = {k: v for k, v in (("num_slots", args.num_slots),
                                   ("num_iterations", args.num_iterations)) if v is not None}
    task = normalize_task(args.task)
    model = load_tf_checkpoint(args.path, task, **overrides)
    out = save_pretrained(model, args.out, source=str(resolve_prefix(args.path)))
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.path} ({task}, {n:,} parameters) -> {out}")
    return 0
