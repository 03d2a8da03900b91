"""`slotlab convert-savi PATH --out DIR`: an official SAVi checkpoint (JAX/Flax) -> a slotlab
model directory (`model.safetensors` + `config.json`, loaded by `slotlab.load_pretrained`)."""

from __future__ import annotations

import argparse


def register_savi(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-savi",
        help="convert an official SAVi (JAX/Flax) checkpoint to model.safetensors + config.json",
        description="Convert an official SAVi checkpoint (google-research/slot-attention-video) "
        "into a slotlab model directory, without JAX, Flax or TensorFlow. The architecture is "
        "read from the parameter shapes.",
    )
    p.add_argument("path", help="a clu checkpoint directory (e.g. workdir/checkpoints-0: its "
                   "newest ckpt-N.flax), a ckpt-N.flax file or a params msgpack file")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--num-slots", type=int, default=None,
                   help="K for box/point and Gaussian initialisers (default 24, SAVi-S on MOVi)")
    p.add_argument("--num-iterations", type=int, default=None,
                   help="Slot Attention iterations per frame (not stored; official 1)")
    p.add_argument("--target", choices=["flow", "frames"], default=None,
                   help="what the readout reconstructs (not stored; default flow)")
    p.set_defaults(func=run_savi)


def run_savi(args: argparse.Namespace) -> int:
    from slotlab.models.pretrained import save_pretrained
    from slotlab.tf_formats.flax_msgpack import checkpoint_file
    from slotlab.tf_formats.official_savi import load_savi_checkpoint

    model = load_savi_checkpoint(args.path, num_slots=args.num_slots,
                                 num_iterations=args.num_iterations, target=args.target)
    source = checkpoint_file(args.path)
    out = save_pretrained(model, args.out, source=str(source))
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    print(f"converted {source} (SAVi, {c.initializer} initializer, {c.resolution[0]}x"
          f"{c.resolution[1]}, {n:,} parameters) -> {out}")
    return 0
