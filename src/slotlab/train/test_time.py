"""Choosing evaluation's Slot Attention settings (K slots, T iterations) on held-out images.

More iterations in eval mode than in training let slots settle which one holds an object, and
with Gaussian initial slots K can change too; whether either helps depends on the data, so it is
measured, never assumed. A run with `test_time_slots` / `test_time_iterations` scores, once its
last step is taken, every pair (K, T) of those lists on held-out images its evaluations do not
score (the `test_time_num` images after the first `eval_num` of its evaluation data), keeps the
best by FG-ARI (the model's own settings on a tie), and records the choice: in the final model's
config (`test_slots`, `test_iterations`) and in RUN_DIR/test_time.json (every pair's figures,
which images, the step). `slotlab eval` and `slotlab visualize` of the run then use it. Where
the evaluation data has too few images for it, or no masks, the run says so before its first
step, trains, and evaluates with the model's own settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from slotlab.errors import ConfigError
from slotlab.io import atomic_write

TEST_TIME_FILE = "test_time.json"
MIN_IMAGES = 64  # fewest held-out images a choice is made on
SHOWN = ("fg_ari", "mbo", "ari", "mse")


def eval_settings(config: Any) -> tuple[int, int]:
    """(K, T) a model of `config` runs in eval mode."""
    return (config.test_slots or config.num_slots,
            config.test_iterations or config.num_iterations)


def candidates(config: Any, slots: Sequence[int], iterations: Sequence[int]
               ) -> list[tuple[int, int]]:
    """The pairs (K, T) to score: the model's own eval-mode settings first (a tie keeps them),
    then every K of `slots` with every T of `iterations` (an empty list: the model's)."""
    own = eval_settings(config)
    grid = [(k, t) for k in (slots or [own[0]]) for t in (iterations or [own[1]])]
    return [own, *(kt for kt in dict.fromkeys(grid) if kt != own)]


def held_out_images(dataset: Dataset, eval_num: int, num: int) -> range:
    """The indices the choice scores: up to `num` after the first `eval_num`. Fewer than
    MIN_IMAGES, or images without masks, is one ConfigError line saying so."""
    images = range(eval_num, min(eval_num + num, len(dataset)))
    if len(images) < MIN_IMAGES:
        raise ConfigError(
            f"choosing test-time settings needs at least {MIN_IMAGES} held-out images after the "
            f"{eval_num} each evaluation scores; the evaluation data has {len(dataset)} in all "
            "(give a larger --eval-data, or a smaller --eval-num)")
    if "mask" not in dataset[images.start]:
        raise ConfigError("choosing test-time settings needs ground-truth masks; the evaluation "
                          "data has none")
    return images


@torch.no_grad()
def choose_test_time(model: nn.Module, dataset: Dataset, task: str, slots: Sequence[int],
                     iterations: Sequence[int], images: range, seed: int = 0,
                     batch_size: int = 32, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Score each candidate (K, T) on `images` of `dataset` (the same slot noise for each);
    returns {"images": [first, stop], "metric": "fg_ari", "chosen": {num_slots, num_iterations},
    "grid": [{num_slots, num_iterations, fg_ari, mbo, ari, mse}, ...]}."""
    from slotlab.train.evaluate import evaluate

    if task != "object_discovery":
        raise ConfigError("test-time settings are chosen by FG-ARI: object discovery only")
    subset = Subset(dataset, images)
    grid = []
    for k, t in candidates(model.config, slots, iterations):
        metrics = evaluate(model, subset, task, batch_size=batch_size, seed=seed, device=device,
                           num_slots=k, num_iterations=t)
        grid.append({"num_slots": k, "num_iterations": t,
                     **{key: metrics[key] for key in SHOWN if key in metrics}})
    best = max(grid, key=lambda row: -math.inf if math.isnan(row["fg_ari"]) else row["fg_ari"])
    return {"images": [images.start, images.stop], "metric": "fg_ari",
            "chosen": {"num_slots": best["num_slots"], "num_iterations": best["num_iterations"]},
            "grid": grid}


def apply_test_time(model: nn.Module, num_slots: int, num_iterations: int) -> None:
    """Make `model` run K = `num_slots`, T = `num_iterations` in eval mode (its config records
    them, so a saved model keeps them)."""
    test_slots = None if num_slots == model.num_slots else num_slots
    model.config = dataclasses.replace(model.config, test_slots=test_slots,
                                       test_iterations=num_iterations)
    model.slot_attention.test_iterations = num_iterations


def write_choice(run_dir: Path, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(run_dir / TEST_TIME_FILE, lambda f: f.write(text.encode()), "test-time choice")


def recorded_choice(run_dir: Path, step: int | None) -> dict[str, int] | None:
    """The (K, T) chosen for the model of `step` of the run (None: none chosen for that step)."""
    path = run_dir / TEST_TIME_FILE
    if step is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record["step"] != step:
            return None
        return {"num_slots": int(record["chosen"]["num_slots"]),
                "num_iterations": int(record["chosen"]["num_iterations"])}
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a test-time choice slotlab wrote; delete it to "
                          "evaluate with the run's own settings") from None
