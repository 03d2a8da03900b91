"""A run's report, computed with its model: `build_report(RUN, OUT)` writes OUT/index.html.

What is computed (`collect`):

* the run's config, its training and evaluation records (`RUN/metrics.jsonl`);
* the untrained model's figures beside the trained one's: an evaluation record's `untrained`
  mapping where the run wrote one, else a freshly initialised model of the same config (built
  after `torch.manual_seed(config seed)`, as training builds it) evaluated with the same slot
  noise seed on the same images (the evaluation split and image count of the run's last
  evaluation record) by `evaluate_figures`;
* for the first N images of the data and every asked number of test-time iterations T: the
  input, the ground-truth mask, each slot's RGB and mask logits (object discovery), the
  predictions with their Hungarian match to the ground truth (set prediction), and the attention
  of every iteration, placed on the pixels;
* for a video model (SAVi, `slotlab.models.savi`), the first N clips instead: every frame, its
  true masks and flow, each slot's decoded target and mask logits and the corrector's attention
  on every frame (`video_views`). The untrained figures of video runs are only the recorded ones.

Arrays go into the page quantised (`pack`): `{"q": "u8" | "u16", "lo", "step", "shape", "data"}`
with `data` the base64 of the little-endian unsigned integers q in C order, and the value
`lo + q * step` in float64 (`unpack`), the exact arithmetic of the page's `decode`. The page
recombines the kept slots as `recombine` does: softmax over the kept slots of the dequantised
mask logits, times the dequantised RGB, summed over the kept slots.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset, default_collate

from slotlab.data import build_dataset
from slotlab.data.preprocess import normalize_batch_image, resize_image, resize_mask
from slotlab.errors import ConfigError, DataError, SlotlabError
from slotlab.metrics import segmentation_metrics
from slotlab.models.object_discovery import cells_to_pixels, config_cell_pixels
from slotlab.schema import to_dict
from slotlab.train.losses import hungarian_match, pairwise_huber_cost
from slotlab.train.visualize import checked_device, open_dataset

VIDEO_ERROR = "video runs are not supported by report yet"
TASKS = ("object_discovery", "set_prediction", "video")


def video_supported() -> bool:
    """Whether this slotlab has the video model (SAVi, `slotlab.models.savi`)."""
    from slotlab.models import MODELS

    return "video" in MODELS

# Slot k's colour everywhere in the page (cycled after 20): distinct hues, light to dark.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)

# The CLEVR vocabulary in the order of the set-prediction targets' one-hot blocks.
SIZES = ("small", "large")
MATERIALS = ("rubber", "metal")
SHAPES = ("cube", "sphere", "cylinder")
COLORS = ("gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan")
COORD_SCALE = 6.0  # targets hold (coords + 3) / 6

# Evaluation keys shown first, in this order; other numeric keys follow.
METRIC_ORDER = ("fg_ari", "ari", "mbo", "miou", "mse", "fg_ari_attn", "ap_inf", "ap_1", "ap_0.5",
                "ap_0.25", "ap_0.125", "acc_all", "acc_size", "acc_material", "acc_shape",
                "acc_color", "position_error")
NOT_METRICS = {"step", "split", "train_minutes", "images_seen", "num_images", "seed", "run_dir",
               "num_slots", "num_iterations", "fg_ari_nan_images", "untrained"}


# ------------------------------------------------------------------------------------------------
# Quantised arrays: the page's exact dequantisation
# ------------------------------------------------------------------------------------------------
def pack(values: np.ndarray | torch.Tensor, bits: int) -> dict[str, Any]:
    """`values` quantised to `bits` (8 or 16) unsigned integers over their range [min, max]."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=1e30, neginf=-1e30)
    lo, hi = float(v.min()), float(v.max())
    qmax = (1 << bits) - 1
    step = (hi - lo) / qmax if hi > lo else 1.0
    return pack_integers(np.rint((v - lo) / step), bits, lo, step)


def pack_integers(q: np.ndarray | torch.Tensor, bits: int, lo: float = 0.0,
                  step: float = 1.0) -> dict[str, Any]:
    """Integers q (clipped to the `bits` range) standing for `lo + q * step`."""
    dtype = {8: "<u1", 16: "<u2"}[bits]
    q = np.clip(np.asarray(q, dtype=np.float64), 0, (1 << bits) - 1).astype(dtype)
    return {"q": f"u{bits}", "lo": float(lo), "step": float(step), "shape": list(q.shape),
            "data": base64.b64encode(np.ascontiguousarray(q).tobytes()).decode("ascii")}


def unpack(packed: dict[str, Any]) -> np.ndarray:
    """The float64 values of a `pack`ed array: lo + q * step (what the page computes)."""
    dtype = {"u8": "<u1", "u16": "<u2"}[packed["q"]]
    q = np.frombuffer(base64.b64decode(packed["data"]), dtype=dtype)
    return (packed["lo"] + q.astype(np.float64) * packed["step"]).reshape(packed["shape"])


def recombine(rgb: np.ndarray, logits: np.ndarray, kept: list[int] | np.ndarray) -> np.ndarray:
    """The image of the kept slots: softmax over the kept slots of the mask logits [K, H, W]
    times the RGB [K, 3, H, W], summed: [3, H, W] in float64 (zeros where no slot is kept)."""
    kept = [int(k) for k in kept]
    if not kept:
        return np.zeros(rgb.shape[1:], dtype=np.float64)
    lg = logits[kept].astype(np.float64)
    e = np.exp(lg - lg.max(axis=0, keepdims=True))
    masks = e / e.sum(axis=0, keepdims=True)
    return (masks[:, None] * rgb[kept].astype(np.float64)).sum(axis=0)


def to_byte(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> display bytes as the page writes them: floor(clamp((x + 1) * 127.5) + 0.5)."""
    return np.floor(np.clip((np.asarray(x, dtype=np.float64) + 1.0) * 127.5, 0, 255) + 0.5)


# ------------------------------------------------------------------------------------------------
# The run: config and records
# ------------------------------------------------------------------------------------------------
def check_task(path: Path) -> None:
    """A run whose config.yaml names a task the report cannot show is one error line."""
    config = path / "config.yaml"
    if not config.is_file():
        return
    try:
        task = (yaml.safe_load(config.read_text()) or {}).get("task")
    except (yaml.YAMLError, OSError, AttributeError, UnicodeDecodeError):
        return  # load_model reports what is wrong with the file
    if str(task).strip().lower() == "video" and not video_supported():
        raise SlotlabError(VIDEO_ERROR)


def read_records(path: Path) -> tuple[list[dict], list[dict]]:
    """(training records, evaluation records) of RUN/metrics.jsonl; unreadable lines (a line cut
    short by a killed process) are skipped with a warning."""
    train, evals = [], []
    file = path / "metrics.jsonl"
    if not file.is_file():
        return train, evals
    bad = 0
    for line in file.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(record, dict) or "step" not in record:
            continue
        if "split" in record:
            evals.append(record)
        elif "loss" in record:
            train.append(record)
    if bad:
        print(f"warning: skipped {bad} unreadable line(s) of {file}", file=sys.stderr)
    return train, evals


def metric_keys(records: list[dict]) -> list[str]:
    """The numeric keys of `records` (known ones first, in METRIC_ORDER)."""
    found: list[str] = []
    for record in records:
        for key, value in record.items():
            if key in NOT_METRICS or key in found:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                found.append(key)
    order = {k: i for i, k in enumerate(METRIC_ORDER)}
    return sorted(found, key=lambda k: (order.get(k, len(order)), found.index(k)))


def curves(task: str, train: list[dict], evals: list[dict]) -> list[dict[str, Any]]:
    """The learning curves: loss; FG-ARI and mBO (object discovery) or AP (set prediction)."""
    plots = []
    loss = [(r["step"], r["loss"]) for r in train if _finite(r.get("loss"))]
    plots.append({"title": "training loss", "key": "loss", "series": [("loss", loss)]})
    if task != "set_prediction":  # object discovery and video: segmentation figures
        for key, title in (("fg_ari", "FG-ARI"), ("mbo", "mBO")):
            points = [(r["step"], r[key]) for r in evals if _finite(r.get(key))]
            plots.append({"title": f"{title} ({_split_name(evals)})", "key": key,
                          "series": [(title, points)]})
    else:
        series = []
        for key in ("ap_inf", "ap_1", "ap_0.5", "ap_0.25", "ap_0.125"):
            points = [(r["step"], r[key]) for r in evals if _finite(r.get(key))]
            if points:
                series.append((key.replace("ap_", "AP@"), points))
        plots.append({"title": f"average precision ({_split_name(evals)})", "key": "ap_inf",
                      "series": series or [("AP@inf", [])]})
    return plots


def _split_name(evals: list[dict]) -> str:
    return f"{evals[-1]['split']} split" if evals else "no evaluation yet"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------------------
# Data and figures
# ------------------------------------------------------------------------------------------------
def load_batch(dataset: Dataset, indices: range, resolution: tuple[int, int]) -> dict[str, Any]:
    """Items of `dataset` collated, the images as float in [-1, 1] at the model's resolution
    (and their instance masks, where they have them, resized the same way)."""
    items = []
    for i in indices:
        item = dict(dataset[i])
        image = normalize_batch_image(torch.as_tensor(item["image"])[None])[0]
        if tuple(image.shape[-2:]) != tuple(resolution):
            image = resize_image(image, tuple(resolution)).clamp(-1.0, 1.0)
            if "mask" in item:
                item["mask"] = resize_mask(torch.as_tensor(item["mask"]), tuple(resolution))
        item["image"] = image
        items.append({k: v for k, v in item.items() if k in ("image", "mask", "target")})
    return default_collate(items)


def slot_noise(model: nn.Module, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Standard-normal slot noise [B, K, D] from `generator`, as the run's evaluations draw it."""
    return torch.randn(batch, model.num_slots, model.slot_size, generator=generator)


@torch.no_grad()
def evaluate_figures(model: nn.Module, dataset: Dataset, task: str, num: int, seed: int,
                     batch_size: int, device: torch.device) -> dict[str, float]:
    """The figures `slotlab eval` reports for `model` on the first `num` images of `dataset`
    (slot noise seeded with `seed`)."""
    from slotlab.train.evaluate import evaluate, untrained_figures

    return untrained_figures(evaluate(model, dataset, task, num=num, batch_size=batch_size,
                                      seed=seed, device=device))


def describe(row: np.ndarray) -> dict[str, Any]:
    """A 19-value prediction or target -> its attributes (argmax per block), its position in
    CLEVR units and its objectness."""
    return {
        "size": SIZES[int(row[3:5].argmax())], "material": MATERIALS[int(row[5:7].argmax())],
        "shape": SHAPES[int(row[7:10].argmax())], "color": COLORS[int(row[10:18].argmax())],
        "coords": [round(float(c) * COORD_SCALE - COORD_SCALE / 2, 3) for c in row[:3]],
        "p": round(float(row[18]), 4),
    }


def match_slots(predictions: torch.Tensor, target: torch.Tensor) -> list[dict[str, Any]]:
    """Each slot's predicted object and the ground-truth object the training loss matches it to
    (Hungarian on the Huber cost, as `hungarian_huber_loss`); None where its partner is a padding
    row. predictions [K, 19], target [K_t, 19]."""
    rows, cols = hungarian_match(pairwise_huber_cost(predictions[None].float(),
                                                     target[None].float()))
    partner = {int(c): int(r) for r, c in zip(rows[0], cols[0])}
    pred, tgt = predictions.double().numpy(), target.double().numpy()
    slots = []
    for k in range(pred.shape[0]):
        entry: dict[str, Any] = {"prediction": describe(pred[k]), "target": None}
        r = partner.get(k)
        if r is not None and tgt[r, 18] != 0:
            truth = describe(tgt[r])
            truth["index"] = r
            entry["target"] = truth
            entry["distance"] = round(float(np.linalg.norm(
                (tgt[r, :3] - pred[k, :3]) * COORD_SCALE)), 4)
            entry["right"] = {a: entry["prediction"][a] == truth[a]
                              for a in ("size", "material", "shape", "color")}
        slots.append(entry)
    return slots


def attention_on_pixels(model: nn.Module, attention: list[torch.Tensor]) -> torch.Tensor:
    """Attention of every iteration, T x [B, K, N], on the image's pixels: [B, T, K, H, W]."""
    h, w = model.config.feature_size
    resolution = tuple(model.config.resolution)
    cell_pixels = getattr(model, "cell_pixels", None) or config_cell_pixels(model.config)
    maps = []
    for a in attention:
        grid = a.float().cpu().reshape(a.shape[0], a.shape[1], h, w)
        if (h, w) != resolution:
            grid = cells_to_pixels(grid, cell_pixels, resolution)
        maps.append(grid)
    return torch.stack(maps, dim=1).clamp(0.0, 1.0)


@torch.no_grad()
def image_views(model: nn.Module, task: str, batch: dict[str, Any], iterations: list[int],
                seed: int, device: torch.device, chunk: int = 8) -> list[dict[str, Any]]:
    """Per image: the input and ground truth, and per number of iterations T what the model
    makes of it (see the module docstring); the model runs on `chunk` images at a time."""
    model.eval()
    image = batch["image"].to(device)
    n = image.shape[0]
    noise = slot_noise(model, n, torch.Generator().manual_seed(seed)).to(device)
    views = []
    for i in range(n):
        view: dict[str, Any] = {"input": pack_integers(to_byte(image[i].cpu().numpy()), 8,
                                                       -1.0, 2.0 / 255.0), "per_t": []}
        if "mask" in batch:
            ids = batch["mask"][i].cpu().numpy()
            view["mask"] = pack_integers(ids, 8 if ids.max(initial=0) < 256 else 16)
        if "target" in batch:
            target = batch["target"][i].float()
            view["objects"] = [{**describe(row), "index": r}
                               for r, row in enumerate(target.double().numpy()) if row[18] != 0]
        views.append(view)
    for t in iterations:
        for start in range(0, n, chunk):
            part = slice(start, min(n, start + chunk))
            for i, entry in enumerate(_views_at(model, task, batch, image, noise, part, t, device),
                                      start=start):
                views[i]["per_t"].append(entry)
    return views


def _views_at(model: nn.Module, task: str, batch: dict[str, Any], image: torch.Tensor,
              noise: torch.Tensor, part: slice, t: int, device: torch.device
              ) -> list[dict[str, Any]]:
    """What the model makes of the images `part` of the batch with `t` iterations."""
    image = image[part]
    out = model(image, noise=noise[part], num_iterations=t, return_all_attention=True)
    attention = attention_on_pixels(model, out.attention_per_iteration or [out.attention])
    if task == "object_discovery":
        seg = (segmentation_metrics(batch["mask"][part].to(device), out.masks.float())
               if "mask" in batch else {})
        mse = ((out.recon_combined.float() - image) ** 2).mean(dim=(1, 2, 3))
    entries = []
    for i in range(image.shape[0]):
        entry: dict[str, Any] = {
            "iterations": t,
            "attention": pack_integers(np.rint(attention[i].numpy() * 255), 8, 0.0, 1.0 / 255.0),
        }
        if task == "object_discovery":
            entry["rgb"] = pack(out.recons[i].float().cpu().numpy(), 8)
            entry["logits"] = pack(out.mask_logits[i, :, 0].float().cpu().numpy(), 16)
            metrics = {"mse": float(mse[i])}
            metrics.update({k: float(v[i]) for k, v in seg.items()})
            entry["metrics"] = {k: (None if math.isnan(v) else round(v, 6))
                                for k, v in metrics.items()}
        else:
            predictions = out.predictions[i].float().cpu()
            target = batch["target"][part][i] if "target" in batch else None
            entry["slots"] = (match_slots(predictions, target) if target is not None else
                              [{"prediction": describe(p), "target": None}
                               for p in predictions.double().numpy()])
        entries.append(entry)
    return entries


def load_video_batch(dataset: Dataset, indices: range,
                     resolution: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Clips of a video dataset (`slotlab.data.video` items) collated: video [B, T, 3, H, W] in
    [0, 1] at the model's resolution, instance masks [B, T, H, W], first-frame boxes / points
    and the flow target `flow_rgb`, where the items have them."""
    items = []
    for i in indices:
        item = dict(dataset[i])
        if "video" not in item:
            raise DataError(f"{type(dataset).__name__} does not yield videos (no 'video' key); "
                            "pass --data with a video dataset")
        video = torch.as_tensor(item["video"]).float()
        kept = {"video": video}
        for key in ("masks", "boxes", "points", "flow_rgb"):
            if key in item:
                kept[key] = torch.as_tensor(item[key])
        if tuple(video.shape[-2:]) != tuple(resolution):
            kept["video"] = resize_image(video, tuple(resolution)).clamp(0.0, 1.0)
            if "flow_rgb" in kept:
                kept["flow_rgb"] = resize_image(kept["flow_rgb"].float(), tuple(resolution))
            if "masks" in kept:
                kept["masks"] = torch.stack([resize_mask(m, tuple(resolution))
                                             for m in kept["masks"]])
        items.append(kept)
    return default_collate(items)


@torch.no_grad()
def video_views(model: nn.Module, batch: dict[str, torch.Tensor], seed: int,
                device: torch.device, chunk: int = 4) -> list[dict[str, Any]]:
    """Per clip: its frames and ground truth, and what SAVi makes of every frame: each slot's
    decoded target (the flow as RGB, or the frames) and mask logits, the corrector's attention,
    and the clip's FG-ARI / mBO (over all its frames at once) and the decoded target's MSE.
    Values in [0, 1] go into the page as [-1, 1] (x * 2 - 1), the images' range, so that the page
    draws and recombines them alike."""
    model.eval()
    config = model.config
    video = batch["video"]
    n, frames = video.shape[:2]
    initializer = getattr(config, "initializer", "gaussian")
    generator = torch.Generator().manual_seed(seed)
    if initializer in ("boxes", "points") and initializer not in batch:
        raise DataError(f"this SAVi model starts from the first frame's {initializer}, which "
                        "the data does not have")
    truth = "flow_rgb" if getattr(config, "target", "frames") == "flow" else "video"
    views = []
    for start in range(0, n, chunk):
        part = slice(start, min(n, start + chunk))
        kwargs: dict[str, Any] = {}
        if initializer in ("boxes", "points"):
            kwargs[initializer] = batch[initializer][part].float().to(device)
        elif initializer == "gaussian":
            kwargs["slots"] = model.initial_slots(video[part].shape[0], generator=generator)
        out = model(video[part].to(device), **kwargs)
        k = out.mask_logits.shape[2]
        h, w = config.resolution
        for j in range(out.mask_logits.shape[0]):
            i = start + j
            view: dict[str, Any] = {
                "frames": int(frames),
                "input": pack_integers(to_byte(video[i].numpy() * 2 - 1), 8, -1.0, 2.0 / 255.0),
                "per_t": [],
            }
            entry: dict[str, Any] = {
                "iterations": int(config.num_iterations),
                "rgb": pack(out.readouts[j].float().cpu().numpy() * 2 - 1, 8),
                "logits": pack(out.mask_logits[j, :, :, 0].float().cpu().numpy(), 16),
            }
            attention = out.attention[j].float().cpu()  # [T, K, N]
            if attention.shape[-1] == h * w:  # the encoder keeps the resolution (SAVi's does)
                entry["attention"] = pack_integers(
                    np.rint(attention.reshape(frames, 1, k, h, w).clamp(0, 1).numpy() * 255), 8,
                    0.0, 1.0 / 255.0)
            metrics: dict[str, float] = {}
            if truth in batch:
                target = batch[truth][i].float()
                metrics["mse"] = float(((out.target[j].float().cpu() - target) ** 2).mean())
                if truth == "flow_rgb":
                    view["target_truth"] = pack_integers(to_byte(target.numpy() * 2 - 1), 8,
                                                         -1.0, 2.0 / 255.0)
            if "masks" in batch:
                ids = batch["masks"][i]
                view["mask"] = pack_integers(ids.numpy(), 8 if int(ids.max()) < 256 else 16)
                masks = out.masks[j, :, :, 0].float().cpu()  # [T, K, H, W]
                clip = masks.permute(1, 0, 2, 3).reshape(1, k, frames * h, w)
                seg = segmentation_metrics(ids.reshape(1, frames * h, w), clip)
                metrics.update({key: float(v[0]) for key, v in seg.items()})
            entry["metrics"] = {key: (None if math.isnan(v) else round(v, 6))
                                for key, v in metrics.items()}
            view["per_t"].append(entry)
            views.append(view)
    return views


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------
def parse_iterations(text: str | list[int] | None) -> list[int] | None:
    """"1,3,5" -> [1, 3, 5] (sorted, without repeats); one error line for anything else."""
    if text is None:
        return None
    parts = text if isinstance(text, list) else [p for p in str(text).split(",") if p.strip()]
    try:
        values = sorted({int(str(p).strip()) for p in parts})
    except ValueError:
        raise ConfigError(f"--iterations must be positive integers separated by commas (e.g. "
                          f"1,3,5), got {text!r}") from None
    if not values or values[0] < 1:
        raise ConfigError(f"--iterations must be positive integers separated by commas (e.g. "
                          f"1,3,5), got {text!r}")
    return values


def untrained_figures(config: dict[str, Any], model: nn.Module, evals: list[dict],
                      fallback: tuple[Dataset, str] | None, device: torch.device
                      ) -> dict[str, Any] | None:
    """The untrained model's figures: a record's `untrained` mapping, else computed on the images
    of the run's last evaluation (or, where that data cannot be opened, on `fallback`)."""
    for record in reversed(evals):
        if isinstance(record.get("untrained"), dict):
            return {"values": record["untrained"], "source": "recorded by the run"}

    task = config["task"]
    last = evals[-1] if evals else {}
    seed = int(last.get("seed", config.get("seed", 0)))
    num = int(last.get("num_images", config.get("eval_num", 256)))
    split = str(last.get("split", config.get("eval_split", "val")))
    options = {k: v for k, v in (config.get("data_options") or {}).items() if v is not None}
    if "num" in options:
        options["num"] = min(int(options["num"]), int(config.get("eval_num", num)))
    options["resolution"] = tuple(model.config.resolution)
    try:
        dataset = build_dataset(config["data"], split, task, **options)
        where = f"the {min(num, len(dataset))} {split} images of the run's evaluation"
    except DataError as exc:
        if fallback is None:
            print(f"note: no untrained figures ({exc})", file=sys.stderr)
            return None
        dataset, split = fallback
        where = f"the report's images ({exc})"
    from slotlab.train.evaluate import untrained_model

    fresh = untrained_model(task, model.config, int(config.get("seed", 0))).to(device)
    batch_size = min(int(config.get("batch_size", 32)), 64)
    values = evaluate_figures(fresh, dataset, task, num, seed, batch_size, device)
    return {"values": values, "source": f"computed now: a freshly initialised model (seed "
            f"{config.get('seed', 0)}) on {where}, slot noise seed {seed}"}


def collect(path: str | Path, data: str | None = None, num: int = 8,
            iterations: str | list[int] | None = None, split: str | None = None,
            seed: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Everything the page shows, as plain values (see the module docstring)."""
    from slotlab.train.checkpoint import load_model

    path = Path(path)
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ConfigError(f"--num must be a positive integer, got {num!r}")
    asked = parse_iterations(iterations)
    check_task(path)
    device_obj = checked_device(device)
    model, info = load_model(path, device_obj)
    task = info.get("task")
    if task not in TASKS or (task == "video" and not video_supported()):
        raise SlotlabError(VIDEO_ERROR if str(task) == "video" else
                           f"{path} holds a {task} model, which report cannot show")
    model.eval()
    config = info.get("config")
    train, evals = read_records(path)
    model_config = to_dict(model.config)
    trained_t = model.config.num_iterations
    eval_t = getattr(model.config, "test_iterations", None) or trained_t
    if task == "video" and asked and asked != [trained_t]:
        raise ConfigError(f"--iterations does not apply to a video model: SAVi runs its "
                          f"{trained_t} Slot Attention iteration(s) on every frame")
    iterations_list = asked or sorted({trained_t, eval_t})
    default_t = eval_t if eval_t in iterations_list else iterations_list[-1]
    seed = int(seed if seed is not None else (config or {}).get("seed", 0))

    options: dict[str, Any] = {}
    if data is None:
        data = info.get("data")
        if data is None:
            raise ConfigError(f"{path} does not record its training data; pass --data SPEC")
        options = {k: v for k, v in ((config or {}).get("data_options") or {}).items()
                   if v is not None}
        if "num" in options:
            options["num"] = min(int(options["num"]),
                                 max(num, int((config or {}).get("eval_num", num))))
    options["resolution"] = tuple(model.config.resolution)
    split = split or (config or {}).get("eval_split", "val")
    dataset, split = open_dataset(data, split, task, options, note_file=sys.stderr)
    n = min(num, len(dataset))
    if task == "video":
        views = video_views(model, load_video_batch(dataset, range(n), model.config.resolution),
                            seed, device_obj)
        num_slots = views[0]["per_t"][0]["logits"]["shape"][1] if views else \
            model.config.num_slots
    else:
        batch = load_batch(dataset, range(n), model.config.resolution)
        views = image_views(model, task, batch, iterations_list, seed, device_obj)
        num_slots = model.num_slots

    keys = metric_keys(evals)
    untrained = trained = None
    if task != "video":  # figures of video models: the run's own records only
        untrained = (untrained_figures(config, model, evals, (dataset, split), device_obj)
                     if config else None)
    for record in reversed(evals):
        if isinstance(record.get("untrained"), dict):
            untrained = {"values": record["untrained"], "source": "recorded by the run"}
            break
    if evals:
        trained = {"values": evals[-1], "source": f"the run's evaluation at step "
                   f"{evals[-1]['step']} ({evals[-1].get('num_images', '?')} "
                   f"{evals[-1]['split']} images)"}
    elif config and task != "video":
        batch_size = min(int(config.get("batch_size", 32)), 64)
        values = evaluate_figures(model, dataset, task, int(config.get("eval_num", 256)), seed,
                                  batch_size, device_obj)
        trained = {"values": values, "source": f"computed now on the {split} images"}
    if untrained is not None:
        keys += [k for k in metric_keys([untrained["values"]]) if k not in keys]
    if trained is not None and not keys:
        keys = metric_keys([trained["values"]])

    return {
        "title": path.resolve().name,
        "path": str(path),
        "task": task,
        "step": info.get("step"),
        "data": data,
        "split": split,
        "seed": seed,
        "config": config,
        "model_config": model_config,
        "metric_keys": keys,
        "trained": trained,
        "untrained": untrained,
        "evals": evals,
        "curves": curves(task, train, evals),
        "page": {
            "task": task,
            "height": int(model.config.resolution[0]),
            "width": int(model.config.resolution[1]),
            "num_slots": int(num_slots),
            "target": getattr(model.config, "target", None),
            "palette": [list(c) for c in PALETTE],
            "iterations": iterations_list,
            "default_iterations": default_t,
            "trained_iterations": trained_t,
            "images": views,
        },
    }


def build_report(path: str | Path, out: str | Path, data: str | None = None, num: int = 8,
                 iterations: str | list[int] | None = None, split: str | None = None,
                 seed: int | None = None, device: str = "cpu") -> Path:
    """Write the report of the run (or model directory) at `path` to OUT/index.html, one
    self-contained page; returns its path."""
    from slotlab.report.page import render_page

    report = collect(path, data=data, num=num, iterations=iterations, split=split, seed=seed,
                     device=device)
    html = render_page(report)
    target = Path(out) / "index.html"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(".index.html.partial")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {target} ({exc.strerror or exc})") from None
    return target
