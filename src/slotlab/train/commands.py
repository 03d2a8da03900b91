"""`slotlab train`, `slotlab eval` and `slotlab visualize`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from slotlab.errors import ConfigError


def _resolution(text: str) -> list[int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"resolution must look like 64 or 64x64: {text!r}"
        ) from None
    return values * 2 if len(values) == 1 else values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (or resume a run directory)",
                       description="Train object discovery or set prediction. Running the same "
                       "command on an existing run directory resumes it.")
    p.add_argument("task", choices=["object-discovery", "set-prediction"])
    p.add_argument("--data", help="data spec, e.g. procedural, procedural-sprites, clevr:PATH")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--preset", help="named settings from configs/ (e.g. clevr6, cpu-sprites)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, dest="learning_rate")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--decay-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile")
    p.add_argument("--cuda-graphs", action="store_true", default=None,
                   help="CUDA graphs (torch.compile mode reduce-overhead; CUDA only)")
    p.add_argument("--pad-last-layer", type=int, metavar="N",
                   help="compute the 4-channel last decoder layer padded to N outputs "
                   "(default: 8 on CUDA, 0 = off on the CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for CUDA, and for "
                   "set prediction on the CPU)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--num-slots", type=int)
    p.add_argument("--num-iterations", type=int)
    p.add_argument("--resolution", type=_resolution, help="model and data resolution, e.g. 64")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm")
    p.add_argument("--ema-decay", type=float, metavar="D",
                   help="evaluate and save an exponential moving average of the weights "
                   "(e.g. 0.999)")
    p.add_argument("--mixture-sigma", type=float, metavar="S",
                   help="object discovery: train on the Gaussian-mixture likelihood of the "
                   "pixels (std S, images in [-1, 1], e.g. 0.2) instead of the MSE")
    p.add_argument("--mask-entropy", type=float, metavar="W",
                   help="object discovery: add W times the mean entropy of the pixels' masks over "
                   "the slots to the loss (breaks ties between slots that share an object)")
    p.add_argument("--set-loss", choices=["huber", "bce"],
                   help="set prediction: huber (official: Huber loss of the sigmoid outputs) or "
                   "bce (binary cross-entropy of the classification logits, Huber on the "
                   "coordinates)")
    p.add_argument("--implicit-diff", action="store_true", default=None,
                   help="implicit differentiation: detach slots before the last iteration")
    p.add_argument("--slot-init", choices=["gaussian", "learned"],
                   help="slot initialisation: gaussian (official) or learned (BO-QSA)")
    p.add_argument("--invariant", action="store_true", default=None,
                   help="Invariant Slot Attention (slot-centric position and scale frames; "
                   "object discovery)")
    p.add_argument("--decoder-frequencies", type=int, metavar="F",
                   help="with --invariant: sin/cos of the slot-relative coordinates at F "
                   "frequencies in the decoder's position code")
    p.add_argument("--decoder-slot-directions", action="store_true", default=None,
                   help="with --invariant: the decoder's position code also gets slot-set "
                   "directions (rel @ M(slot)), so drawn edges can turn with the object")
    p.add_argument("--mask-attention", action="store_true", default=None,
                   help="add the final slots' attention logits over the encoder's cells to the "
                   "decoder's mask logits (the masks see the input; not the paper's model)")
    p.add_argument("--attention-locality", action="store_true", default=None,
                   help="a locality term in Slot Attention's logits from the second iteration "
                   "on, -|x - mu_k|^2 / (2 s^2) with mu_k the slot's mean position and s learned "
                   "(not the paper's model)")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-num", type=int)
    p.add_argument("--image-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--deterministic", action="store_true", default=None)
    p.add_argument("--max-minutes", type=float,
                   help="training wall-clock budget (evaluation time not counted)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="evaluate a run or model directory")
    e.add_argument("path", help="RUN_DIR or MODEL_DIR")
    e.add_argument("--data", help="data spec (default: the run's training data)")
    e.add_argument("--split", default="val")
    e.add_argument("--num", type=int, default=None, help="number of images (default: all)")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--seed", type=int, default=0, help="slot-noise seed")
    e.add_argument("--device", default="auto")
    e.add_argument("--num-slots", type=int, help="evaluate with another number of slots")
    e.add_argument("--num-iterations", type=int, help="evaluate with another number of iterations")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.set_defaults(func=run_eval)

    try:
        from slotlab.train.visualize import register as register_visualize
    except ImportError:
        return
    register_visualize(sub)


def run_train(args: argparse.Namespace) -> int:
    from slotlab.train.config import load_preset, make_config
    from slotlab.train.loop import train

    task = args.task.replace("-", "_")
    run_dir = Path(args.out)
    preset = args.preset
    base = load_preset(preset) if preset else {}
    if base.get("task", task) != task:
        raise ConfigError(f"preset {preset!r} is for {base['task']}, not {task}")
    model = dict(base.get("model") or {})
    data_options = dict(base.get("data_options") or {})
    for key in ("num_slots", "num_iterations", "slot_init"):
        if getattr(args, key) is not None:
            model[key] = getattr(args, key)
    if args.implicit_diff:
        model["implicit_differentiation"] = True
    if args.invariant:
        model["invariant"] = True
    if args.decoder_frequencies is not None:
        model["decoder_frequencies"] = args.decoder_frequencies
    if args.decoder_slot_directions:
        model["decoder_slot_directions"] = True
    if args.mask_attention:
        model["mask_attention"] = True
    if args.attention_locality:
        model["attention_locality"] = True
    if args.resolution:
        model["resolution"] = data_options["resolution"] = args.resolution
    fields = ("data", "steps", "batch_size", "learning_rate", "warmup_steps", "decay_steps",
              "seed", "device", "bf16", "compile", "cuda_graphs", "pad_last_layer",
              "channels_last", "num_workers", "grad_clip", "ema_decay", "mixture_sigma",
              "mask_entropy", "set_loss", "eval_every", "eval_num", "image_every",
              "checkpoint_every", "log_every", "deterministic", "max_minutes")
    cfg = make_config(preset, task=task, model=model, data_options=data_options,
                      **{k: getattr(args, k) for k in fields})
    result = train(cfg, run_dir, progress=not args.no_progress)
    if result:
        print(json.dumps({"run_dir": str(run_dir), **result}))
    return 0


def format_table(metrics: dict) -> str:
    rows = [(k, f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else str(v))
            for k, v in metrics.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run_eval(args: argparse.Namespace) -> int:
    from slotlab.data import build_dataset
    from slotlab.train.checkpoint import load_model
    from slotlab.train.evaluate import evaluate
    from slotlab.train.loop import resolve_device

    device = resolve_device(args.device)
    model, info = load_model(args.path, device=device)
    spec = args.data or info["data"]
    if not spec:
        raise ConfigError(f"{args.path} does not record its data: pass --data SPEC")
    options = dict((info.get("config") or {}).get("data_options") or {})
    options.setdefault("resolution", list(model.resolution))
    if "num" in options:  # the run's `num` sized its training split
        if spec.startswith("cache:"):  # a cache's split holds what it holds; --num takes the first
            del options["num"]
        elif args.num:
            options["num"] = min(int(options["num"]), args.num)
    dataset = build_dataset(spec, args.split, info["task"], **options)
    metrics = evaluate(model, dataset, info["task"], num=args.num, batch_size=args.batch_size,
                       seed=args.seed, device=device, num_slots=args.num_slots,
                       num_iterations=args.num_iterations)
    result = {"path": str(args.path), "task": info["task"], "data": spec, "split": args.split,
              "step": info["step"], **metrics}
    out = Path(args.path) / "eval.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
        print(f"(written to {out})", file=sys.stderr)
    return 0
