"""Learning curves under a wall-clock budget: metric vs training minutes, per variant and seed.

Trains a preset for `--minutes` of training time (evaluation not counted) per seed and variant,
evaluating every `--eval-every` steps on the preset's fixed held-out split (FG-ARI for object
discovery and video, with mBO, and for video the share of objects tracked; AP for set
prediction), then prints a table (minutes, steps, images seen, metric as
mean ± std over seeds and the worst seed) and writes a PNG plot.

    python benchmarks/learning_curve.py --preset quickstart --minutes 10 --seeds 0 1 2 \
        --variants baseline implicit learned --out runs/curves

Variants: baseline (the preset as it is), implicit (implicit differentiation), learned (BO-QSA
learned slot initialisation), gaussian (the paper's Gaussian slot initialisation), clip
(gradient-norm clipping at 0.05, as Invariant Slot Attention), invariant (Invariant Slot
Attention: slot-centric position and scale frames), ema (evaluate an exponential moving average
of the weights, decay 0.999), batch8 (batch size 8), maskattn / nomaskattn (with / without
`mask_attention`: the masks also get the final slots' attention logits), stride1 (an encoder
without strides: attention over every pixel), stride2 (one stride-2 encoder layer, the second),
noinvariant (the paper's Slot Attention with an absolute position embedding instead of Invariant
Slot Attention), iter5 (5 Slot Attention iterations instead of 3), decay10k / decay6k (the
learning rate halves every 10,000 / 6,000 steps), locality (a locality term in Slot Attention's
logits, `attention_locality`), k7 / k8 / k10 (7 / 8 / 10 slots), test7 (7 Slot Attention
iterations at evaluation), dedupe (duplicate slots switched off, `duplicate_overlap: 0.5`),
width25 (the locality term's width starting at 0.25), area1 / area2 (each slot's locality width
grows with the area its attention covers, `locality_area: 1` / `2`), dec16 (a decoder of 16
channels), group95 (the duplicate rule over groups of slots with the same attention shape,
`duplicate_group: 0.95`), nogroup (without it, `duplicate_group: 0`).
Variants combine with "+", e.g. `--variants locality+ema`.
Each run is an ordinary run directory under OUT/<variant>/seed<k>, so an interrupted benchmark
resumes where it stopped (and a larger `--minutes` extends the runs); `--report-only` prints the
table and draws the plot of the runs already there. `--test-time 5:3 9:5` also evaluates each final
model with other numbers of slots K and iterations T than it was trained with. Seeds can run side
by side: one process per seed with `--threads 1` and the same `--out`, then `--report-only`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

VARIANTS = {
    "baseline": {},
    "implicit": {"model": {"implicit_differentiation": True}},
    "learned": {"model": {"slot_init": "learned"}},
    "gaussian": {"model": {"slot_init": "gaussian"}},
    "clip": {"grad_clip": 0.05},
    "invariant": {"model": {"invariant": True}},
    "ema": {"ema_decay": 0.999},
    "batch8": {"batch_size": 8},
    "maskattn": {"model": {"mask_attention": True}},
    "nomaskattn": {"model": {"mask_attention": False}},
    "stride1": {"model": {"encoder_strides": [1, 1, 1, 1]}},
    "stride2": {"model": {"encoder_strides": [1, 2, 1, 1]}},
    "noinvariant": {"model": {"invariant": False}},
    "iter5": {"model": {"num_iterations": 5}},
    "decay10k": {"decay_steps": 10000},
    "decay6k": {"decay_steps": 6000},
    "locality": {"model": {"attention_locality": True}},
    "k7": {"model": {"num_slots": 7}},
    "k8": {"model": {"num_slots": 8}},
    "k10": {"model": {"num_slots": 10}},
    "dedupe": {"model": {"duplicate_overlap": 0.5}},
    "width25": {"model": {"locality_width": 0.25}},
    "area1": {"model": {"locality_area": 1.0}},
    "area2": {"model": {"locality_area": 2.0}},
    "dec16": {"model": {"decoder_channels": [16, 16, 16]}},
    "group95": {"model": {"duplicate_group": 0.95}},
    "nogroup": {"model": {"duplicate_group": 0.0}},
    "test7": {"model": {"test_iterations": 7}},
}


def variant_settings(name: str) -> dict:
    """The settings of a variant name; "a+b" combines variants a and b."""
    settings: dict = {"model": {}}
    for part in name.split("+"):
        settings["model"].update(VARIANTS[part].get("model", {}))
        settings.update({k: v for k, v in VARIANTS[part].items() if k != "model"})
    return settings


def parse_variant(name: str) -> str:
    unknown = [p for p in name.split("+") if p not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)} "
            "(combine with +, e.g. locality+ema)")
    return name


def run_one(preset: str, variant: str, seed: int, minutes: float, eval_every: int,
            run_dir: Path, extra: dict) -> list[dict]:
    from slotlab.train.config import load_preset, make_config
    from slotlab.train.loop import train

    base = load_preset(preset)
    settings = variant_settings(variant)
    model = {**(base.get("model") or {}), **settings.get("model", {})}
    overrides = {k: v for k, v in settings.items() if k != "model"}
    cfg = make_config(preset, model=model, seed=seed, steps=10**9, max_minutes=minutes,
                      eval_every=eval_every, image_every=10**9, checkpoint_every=eval_every,
                      **overrides, **extra)
    train(cfg, run_dir, progress=False)
    return eval_records(run_dir)


def eval_records(run_dir: Path) -> list[dict]:
    """The evaluation records of a run's metrics.jsonl (the lines with a "split")."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "split" in r]


def parse_dataset(text: str) -> tuple[str, str, str | None]:
    """NAME=SPEC[@EVAL_SPEC] -> (name, training data, evaluation data or None)."""
    name, sep, specs = text.partition("=")
    if not sep or not name or not specs:
        raise argparse.ArgumentTypeError(
            f"datasets look like NAME=SPEC or NAME=SPEC@EVAL_SPEC, got {text!r}")
    data, _, eval_data = specs.partition("@")
    return name, data, eval_data or None


def bind_minutes(records: list[dict], metric: str, level: float) -> str:
    """Training minutes to the first evaluation at or above `level`."""
    hit = next((r for r in records if r[metric] >= level), None)
    return "no" if hit is None else f"{hit['train_minutes']:.1f}"


def dataset_table(results: dict[str, dict[int, list[dict]]], metric: str, level: float) -> str:
    """One row per dataset and seed: the final evaluation (FG-ARI or AP, mBO), the untrained
    model's figure on the same images, and the minutes until the metric first reached `level`."""
    second = "ap_1" if metric == "ap_inf" else "mbo"
    rows = [f"| dataset | seed | steps | minutes | {metric} | {second} | untrained {metric} | "
            f"minutes to {metric} >= {level} |", "|---|---|---|---|---|---|---|---|"]
    for name, by_seed in results.items():
        for seed, recs in by_seed.items():
            last = recs[-1]
            untrained = (last.get("untrained") or {}).get(metric, math.nan)
            rows.append(f"| {name} | {seed} | {last['step']} | {last['train_minutes']:.1f} | "
                        f"{last[metric]:.3f} | {last.get(second, math.nan):.3f} | "
                        f"{untrained:.3f} | {bind_minutes(recs, metric, level)} |")
    return "\n".join(rows)


def metric_name(records: list[dict]) -> str:
    return "fg_ari" if "fg_ari" in records[0] else "ap_inf"


def summary(records: list[dict], metric: str) -> str:
    """"mean ± std (min)" of `metric` over the records (one per seed), NaNs left out."""
    values = [r[metric] for r in records if not math.isnan(r[metric])]
    if not values:
        return "nan"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f} ({min(values):.3f})"


def table(results: dict[str, dict[int, list[dict]]], metrics: list[str]) -> str:
    rows = ["| variant | step | minutes | images | " + " | ".join(
        f"{m} mean ± std (min)" for m in metrics) + " |",
        "|---|---|---|---|" + "---|" * len(metrics)]
    for variant, by_seed in results.items():
        steps = sorted(set.intersection(*(set(r["step"] for r in recs)
                                          for recs in by_seed.values())))
        rows_at = [(str(s), [next(r for r in recs if r["step"] == s)
                             for recs in by_seed.values()]) for s in steps]
        finals = [recs[-1] for recs in by_seed.values()]  # where each seed's budget ran out
        if not steps or any(r["step"] != steps[-1] for r in finals):
            rows_at.append(("end (" + "/".join(str(r["step"]) for r in finals) + ")", finals))
        for label, at in rows_at:
            minutes = statistics.mean(r["train_minutes"] for r in at)
            cells = [summary(at, m) for m in metrics]
            images = round(statistics.mean(r["images_seen"] for r in at))
            rows.append(f"| {variant} | {label} | {minutes:.1f} | {images} | "
                        + " | ".join(cells) + " |")
    return "\n".join(rows)


def compare_table(run_dirs: list[Path], minutes: float) -> str:
    """One row per run directory (any settings): training images/s, when the metric first
    passes 0.5 ("binds"), its value nearest 10 minutes, the best and the last value within
    `minutes` of training."""
    rows = ["| run | images/s | binds (> 0.5) | at ~10 min | best | at the end |",
            "|---|---|---|---|---|---|"]
    for run_dir in run_dirs:
        records = [r for r in eval_records(run_dir) if r["train_minutes"] <= minutes + 0.05]
        if not records:
            rows.append(f"| {run_dir} | no evaluation within {minutes} min | | | | |")
            continue
        metric = metric_name(records)
        bind = next((r for r in records if r[metric] > 0.5), None)
        near = min(records, key=lambda r: abs(r["train_minutes"] - 10))
        best = max(records, key=lambda r: r[metric])
        last = records[-1]
        rate = last["images_seen"] / (60 * last["train_minutes"])
        cells = [f"{rate:.0f}",
                 f"{bind['train_minutes']:.1f} min (step {bind['step']})" if bind else "no",
                 f"{near[metric]:.3f} at {near['train_minutes']:.1f} min",
                 f"{best[metric]:.3f} at {best['train_minutes']:.1f} min",
                 f"{last[metric]:.3f} at {last['train_minutes']:.1f} min"]
        rows.append(f"| {run_dir} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def step_table(run_dirs: list[Path]) -> str:
    """The metric (and for object discovery the MSE) of each run at each evaluated step, one
    column per run: runs from machines of different speeds compared at equal training steps."""
    runs = [{r["step"]: r for r in eval_records(d)} for d in run_dirs]
    steps = sorted(set().union(*runs))
    rows = ["| step | " + " | ".join(str(d) for d in run_dirs) + " |",
            "|---|" + "---|" * len(run_dirs)]
    for step in steps:
        cells = []
        for records in runs:
            r = records.get(step)
            if r is None:
                cells.append("")
                continue
            metric = metric_name([r])
            cells.append(f"{r[metric]:.3f}" + (f" ({r['mse']:.4f})" if "mse" in r else ""))
        rows.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def final_model_and_data(run: Path, **changes: Any) -> tuple[Any, Any, Any]:
    """(config, final model, evaluation data) of a run directory, the config with `changes`
    (the data is built from the changed config)."""
    from slotlab.data.build import build_dataset
    from slotlab.models.pretrained import load_pretrained
    from slotlab.train.checkpoint import read_run_config
    from slotlab.train.evaluate import build_eval_dataset

    cfg = read_run_config(run).replace(**changes)
    train_set = build_dataset(cfg.data, "train", cfg.task, **cfg.data_options.kwargs())
    dataset, _ = build_eval_dataset(cfg, train_set)  # what the run evaluated on
    return cfg, load_pretrained(run / "model"), dataset


def test_time_table(out: Path, keys: list[str], seeds: list[int],
                    settings: list[tuple[int, int]], metrics: list[str]) -> str:
    """Evaluate each run's final model (runs under OUT/KEY/seedK, KEY = VARIANT or
    DATASET/VARIANT) with other slot counts K and iterations T than it was trained with (same
    held-out split and number of images as the run's evaluations)."""
    from slotlab.train.evaluate import evaluate

    rows = ["| run | K | T | " + " | ".join(f"{m} mean ± std (min)" for m in metrics) + " |",
            "|---|---|---|" + "---|" * len(metrics)]
    for key in keys:
        by_setting: dict[tuple[int, int], list[dict]] = {}
        for seed in seeds:
            cfg, model, dataset = final_model_and_data(out / key / f"seed{seed}")
            trained = (model.num_slots, model.config.num_iterations)
            for k, t in [trained, *settings]:
                if k != trained[0] and model.config.slot_init == "learned":
                    continue  # learned initial slots: K is fixed
                by_setting.setdefault((k, t), []).append(evaluate(
                    model, dataset, cfg.task, num=cfg.eval_num, seed=cfg.seed, bf16=cfg.bf16,
                    num_slots=k, num_iterations=t))
        for (k, t), recs in by_setting.items():
            cells = [summary(recs, m) for m in metrics]
            rows.append(f"| {key} | {k} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def choice_table(out: Path, keys: list[str], seeds: list[int], slots: list[int],
                 iterations: list[int]) -> str:
    """For each run's final model, the test-time (K, T) chosen as a run with `test_time_slots`
    / `test_time_iterations` chooses it (`slotlab.train.test_time`: by FG-ARI on the held-out
    images after those its evaluations score), then FG-ARI / mBO on the scored images with the
    trained eval-mode settings and with the choice."""
    from slotlab.train.evaluate import evaluate
    from slotlab.train.test_time import choose_test_time, eval_settings, held_out_images

    rows = ["| run | seed | held-out images | K, T | chosen K, T | FG-ARI / mBO | with the "
            "choice |",
            "|---|---|---|---|---|---|---|"]
    for key in keys:
        for seed in seeds:
            cfg, model, dataset = final_model_and_data(
                out / key / f"seed{seed}", test_time_slots=tuple(slots),
                test_time_iterations=tuple(iterations))
            images = held_out_images(dataset, cfg.eval_num, cfg.test_time_num)
            chosen = choose_test_time(model, dataset, cfg.task, slots, iterations, images,
                                      seed=cfg.seed)["chosen"]
            own = eval_settings(model.config)
            scored = [evaluate(model, dataset, cfg.task, num=cfg.eval_num, seed=cfg.seed,
                               num_slots=k, num_iterations=t)
                      for k, t in (own, tuple(chosen.values()))]
            cells = [f"{m['fg_ari']:.3f} / {m['mbo']:.3f}" for m in scored]
            rows.append(f"| {key} | {seed} | {images.start}-{images.stop - 1} | {own[0]}, {own[1]} "
                        f"| {chosen['num_slots']}, {chosen['num_iterations']} | "
                        + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(results: dict[str, dict[int, list[dict]]], metric: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no plot)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (variant, by_seed) in enumerate(results.items()):
        for j, recs in enumerate(by_seed.values()):
            ax.plot([r["train_minutes"] for r in recs], [r[metric] for r in recs],
                    color=f"C{i}", alpha=0.8, label=variant if j == 0 else None)
    ax.set_xlabel("training minutes")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--data", help="data spec (default: the preset's)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["baseline"], type=parse_variant,
                        help=f"{', '.join(VARIANTS)}; combine with + (e.g. locality+ema)")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--datasets", nargs="+", type=parse_dataset, metavar="NAME=SPEC[@EVAL]",
                        help="run the recipe on each dataset (training spec, and the spec it is "
                        "evaluated on, e.g. black=folder:sw/black_train@folder:sw/black_test); "
                        "runs go to OUT/NAME/VARIANT/seedK and one table has a row per dataset "
                        "and seed")
    parser.add_argument("--bind-at", type=float, default=0.8,
                        help="the level of FG-ARI (or AP) whose first crossing is reported as "
                        "the minutes to bind (default 0.8)")
    parser.add_argument("--out", type=Path, default=Path("runs/learning_curve"))
    parser.add_argument("--compare", nargs="+", type=Path, metavar="RUN_DIR",
                        help="train nothing: one summary row per run directory (runs of any "
                        "settings), within --minutes")
    parser.add_argument("--by-step", action="store_true",
                        help="with --compare: the metric of every run at every evaluated step "
                        "instead (for runs from machines of different speeds)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: table and plot from the runs already under OUT")
    parser.add_argument("--test-time", nargs="+", default=[], metavar="K:T",
                        help="also evaluate each final model with K slots and T iterations "
                        "(e.g. 5:3 9:3 7:5), beside the trained K and T")
    parser.add_argument("--choose-test-time", nargs=2, metavar=("K,K,...", "T,T,..."),
                        help="also choose each final model's test-time K and T among these as "
                        "a run with test_time_slots / test_time_iterations does, and score the "
                        "choice (e.g. 8,10 7,10,15,20)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                        help="bf16 autocast (default: slotlab train's, on for a CPU with "
                        "AVX512-BF16 or AMX)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction,
                        help="torch.compile (default: slotlab train's, on for object discovery "
                        "on a CPU with AMX in runs of 3,000 steps and 10 minutes or more)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads per run (e.g. 1 when running seeds side by side)")
    args = parser.parse_args()
    if args.compare:
        print(step_table(args.compare) if args.by_step else
              compare_table(args.compare, args.minutes))
        return
    extra = {"data": args.data} if args.data else {}
    if args.bf16 is not None:
        extra["bf16"] = args.bf16
    if args.compile is not None:
        extra["compile"] = args.compile
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    results: dict[str, dict[int, list[dict]]] = {}
    datasets = args.datasets or [(None, None, None)]
    for name, data, eval_data in datasets:
        for variant in args.variants:
            key = variant if name is None else f"{name}/{variant}"
            results[key] = {}
            data_extra = {**extra, **({"data": data} if data else {}),
                          **({"eval_data": eval_data} if eval_data else {})}
            for seed in args.seeds:
                run_dir = args.out / key / f"seed{seed}"
                if not args.report_only:
                    print(f"== {key}, seed {seed}, {args.minutes} min", file=sys.stderr)
                    run_one(args.preset, variant, seed, args.minutes, args.eval_every, run_dir,
                            data_extra)
                results[key][seed] = eval_records(run_dir)
    empty = [f"{v}/seed{s}" for v, by_seed in results.items() for s, r in by_seed.items() if not r]
    if empty:
        sys.exit(f"no evaluation yet in {', '.join(empty)} under {args.out} (stopped before the "
                 "first --eval-every step?); run again to resume")
    first = next(iter(next(iter(results.values())).values()))
    metric = metric_name(first)
    metrics = [metric, "ap_1"] if metric == "ap_inf" else [metric, "mbo"]
    if "tracked" in first[0]:  # a video model: the share of objects tracked by one slot
        metrics.append("tracked")
    budget = (f"{max(r[-1]['train_minutes'] for b in results.values() for r in b.values()):.0f}"
              if args.report_only else f"{args.minutes}")
    print(f"\npreset {args.preset}, budget {budget} min per run, seeds {args.seeds}\n")
    print(table(results, metrics))
    print(f"\nthe final evaluation per dataset and seed (untrained: the model each run started "
          f"from, on the same images):\n\n{dataset_table(results, metric, args.bind_at)}")
    if args.test_time:
        try:
            settings = [tuple(int(v) for v in kt.split(":")) for kt in args.test_time]
            assert all(len(kt) == 2 and min(kt) >= 1 for kt in settings)
        except (ValueError, AssertionError):
            parser.error(f"--test-time takes K:T pairs such as 5:3, got {args.test_time}")
        print("\nat test time, the final models with other K (slots) and T (iterations):\n")
        print(test_time_table(args.out, list(results), args.seeds, settings, metrics))
    if args.choose_test_time:
        try:
            slots, iterations = ([int(v) for v in text.split(",")] for text in
                                 args.choose_test_time)
        except ValueError:
            parser.error(f"--choose-test-time takes two lists such as 8,10 7,10,15, got "
                         f"{' '.join(args.choose_test_time)}")
        print("\ntest-time K and T chosen on held-out images, scored on the evaluated ones:\n")
        print(choice_table(args.out, list(results), args.seeds, slots, iterations))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, metric, args.out / f"learning_curve_{Path(args.preset).stem}.png")


if __name__ == "__main__":
    main()
