"""Evaluation of a model on a dataset with the paper's metrics.

Object discovery: reconstruction MSE, and where the data has instance masks ARI, FG-ARI (the
paper's number), mBO, mIoU and the error breakdown of `segmentation_errors`, averaged over images
(NaN images, e.g. FG-ARI of a scene without foreground, are left out of the mean and counted).
Set prediction: AP at the distance thresholds inf, 1, 0.5, 0.25, 0.125, computed over all
evaluated images at once, and the per-attribute accuracy of `attribute_accuracy`.
Slot-initialisation noise comes from a generator seeded with `seed`, so results repeat.
During training, `build_eval_dataset` gives the held-out split a run evaluates on and
`save_pictures` draws its slot pictures.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from slotlab.data import build_dataset
from slotlab.data.build import check_options, kind_options, options_for, parse_spec
from slotlab.data.preprocess import normalize_batch_image
from slotlab.errors import ConfigError, DataError
from slotlab.metrics import average_precision_all, segmentation_errors, segmentation_metrics
from slotlab.metrics.ap import COORD_SCALE, discrete_attributes
from slotlab.metrics.video import tracking_metrics, video_segmentation_metrics
from slotlab.models import build_model
from slotlab.models.object_discovery import cells_to_pixels, config_cell_pixels
from slotlab.models.savi import SAViOutput
from slotlab.train.config import TrainConfig
from slotlab.train.losses import hungarian_match, pairwise_huber_cost


def eval_num_slots(model: nn.Module) -> int:
    """K in eval mode: the model's `test_slots` where set, else the K it trained with."""
    return getattr(getattr(model, "config", None), "test_slots", None) or model.num_slots


def slot_noise(model: nn.Module, batch: int, generator: torch.Generator,
               num_slots: int | None = None) -> torch.Tensor:
    """Standard-normal slot-initialisation noise [B, K, D] drawn from `generator` (on CPU) for
    an evaluation: K = `num_slots`, else the model's eval-mode K (`eval_num_slots`)."""
    return torch.randn(batch, num_slots or eval_num_slots(model), model.slot_size,
                       generator=generator)


def attribute_accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Where set prediction goes wrong: each scene's slots matched to its objects as in training
    (Hungarian on the Huber cost), then over the real matched objects the share whose size,
    material, shape and colour (argmax) are right, each and all four (`acc_*`), and the median
    distance of the positions in CLEVR units (`position_error`).

    predictions [B, K, 19], targets [B, K_t, 19] (`targets[..., 18] != 0` marks real objects).
    """
    rows, cols = hungarian_match(pairwise_huber_cost(predictions, targets))
    scene = torch.arange(targets.shape[0])[:, None]
    target = targets[scene, torch.as_tensor(rows)]  # [B, M, 19], matched pairs
    pred = predictions[scene, torch.as_tensor(cols)]
    real = target[..., 18] != 0
    right = discrete_attributes(pred)[real] == discrete_attributes(target)[real]  # [N, 4]
    if not len(right):
        return {}
    names = ("size", "material", "shape", "color")  # the order of `discrete_attributes`
    result = {f"acc_{n}": float(right[:, i].float().mean()) for i, n in enumerate(names)}
    result["acc_all"] = float(right.all(dim=1).float().mean())
    distance = ((target[..., :3] - pred[..., :3])[real] * COORD_SCALE).norm(dim=-1)
    result["position_error"] = float(distance.median())
    return result


def attention_masks(
    attention: torch.Tensor, size: tuple[int, int],
    cell_pixels: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Slot Attention's attention [B, K, N] (N = h * w encoder positions, softmax over slots)
    as masks [B, K, 1, H, W] at the image size.

    cell_pixels: the pixels each encoder cell is centred on, per axis (`encoder_cell_pixels`);
    the attention is then interpolated linearly between the cell centres (`cells_to_pixels`).
    Without it, each cell is repeated over a stride x stride block of pixels (nearest
    neighbour), the stride found from N (TF-SAME strided encoders give ceil(H / s) x ceil(W / s)
    positions)."""
    b, k, n = attention.shape
    height, width = size
    if cell_pixels is not None:
        h, w = len(cell_pixels[0]), len(cell_pixels[1])
        if h * w != n:
            raise ValueError(f"{n} attention positions, but the encoder has {h}x{w} cells")
        grid = attention.float().reshape(b, k, 1, h, w)
        return cells_to_pixels(grid, cell_pixels, (height, width))
    for stride in range(1, max(height, width) + 1):
        h, w = -(-height // stride), -(-width // stride)
        if h * w == n:
            break
    else:
        raise ValueError(f"{n} attention positions match no encoder grid of a {size} image")
    grid = attention.float().reshape(b * k, 1, h, w)
    if (h, w) != (height, width):
        grid = F.interpolate(grid, scale_factor=stride, mode="nearest")[..., :height, :width]
    return grid.reshape(b, k, 1, height, width)


def image_metrics(out: Any, batch: dict[str, torch.Tensor], image: torch.Tensor,
                  cell_pixels: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Object discovery's per-image metrics [B] of one batch: the reconstruction MSE, and where
    the batch has instance masks the segmentation metrics and errors, and FG-ARI of the last
    iteration's attention (`fg_ari_attn`)."""
    values = {"mse": ((out.recon_combined.float() - image) ** 2).mean(dim=(1, 2, 3))}
    if "mask" in batch:
        true_ids = batch["mask"].to(image.device)
        values.update(segmentation_metrics(true_ids, out.masks.float()))
        # where object pixels go: their main slot, the background's, a third one
        values.update(segmentation_errors(true_ids, out.masks.float()))
        # the same FG-ARI from the last iteration's attention instead of the decoder's masks:
        # where they differ, the slots bind objects that the decoder splits
        values["fg_ari_attn"] = segmentation_metrics(true_ids, attention_masks(
            out.attention, image.shape[-2:], cell_pixels))["fg_ari"]
    return values


class NanMean:
    """Means of per-image values over batches, NaN images left out (and counted for FG-ARI:
    a scene without foreground has none)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.fg_ari_nan: int | None = None

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for key, v in values.items():
            v = v.float().cpu()
            finite = ~torch.isnan(v)
            self.sums[key] = self.sums.get(key, 0.0) + float(v[finite].sum())
            self.counts[key] = self.counts.get(key, 0) + int(finite.sum())
            if key == "fg_ari":
                self.fg_ari_nan = (self.fg_ari_nan or 0) + int((~finite).sum())

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {key: total / self.counts[key] if self.counts[key] else math.nan
                                  for key, total in self.sums.items()}
        if self.fg_ari_nan is not None:
            result["fg_ari_nan_images"] = self.fg_ari_nan
        return result


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    task: str,
    num: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    num_slots: int | None = None,
    num_iterations: int | None = None,
) -> dict[str, Any]:
    """Metrics of `model` on the first `num` examples of `dataset` (all when None).

    `num_slots` / `num_iterations` evaluate with another K / T than the model was trained with
    (without `num_iterations`, a model with `test_iterations` runs those).
    """
    if task == "video":
        if num_slots or num_iterations:
            raise ConfigError("a video model is evaluated with the slots and corrector "
                              "iterations it was trained with (no --num-slots / "
                              "--num-iterations)")
        return evaluate_video(model, dataset, num, batch_size, seed, device, bf16)
    sa = model.slot_attention
    cell_pixels = config_cell_pixels(model.config) if task == "object_discovery" else None
    if num_slots and num_slots != model.num_slots and model.config.slot_init == "learned":
        raise ConfigError(f"this model learned its {model.num_slots} initial slots (slot_init "
                          f"learned); it cannot be evaluated with {num_slots} slots")
    was_training = model.training
    model.eval()
    iterations = sa.iterations(num_iterations)  # eval mode: the model's test_iterations, if set
    n = len(dataset) if num is None else min(num, len(dataset))
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=False)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    means, predictions, targets = NanMean(), [], []
    for batch in loader:
        image = normalize_batch_image(batch["image"].to(device))
        noise = slot_noise(model, image.shape[0], generator, num_slots).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(image, noise=noise, num_iterations=num_iterations)
        if task == "object_discovery":
            means.add(image_metrics(out, batch, image, cell_pixels))
        else:
            predictions.append(out.predictions.float().cpu())
            targets.append(batch["target"].float())
    model.train(was_training)
    result: dict[str, Any] = {"num_images": n, "seed": seed}
    slots = num_slots or eval_num_slots(model)
    if slots != model.num_slots or iterations != sa.num_iterations:
        result.update(num_slots=slots, num_iterations=iterations)
    if task == "object_discovery":
        result.update(means.result())
    else:
        predictions, targets = torch.cat(predictions), torch.cat(targets)
        result.update(average_precision_all(predictions, targets))
        result.update(attribute_accuracy(predictions, targets))
    return result


def video_metrics(out: SAViOutput, batch: dict[str, torch.Tensor],
                  target: torch.Tensor) -> dict[str, torch.Tensor]:
    """SAVi's per-video metrics [B] of one batch: the MSE of the decoded target, and over each
    whole video (every frame, the first included, as the official evaluation) ARI, FG-ARI, mBO
    and mIoU of the alpha masks, FG-ARI without the first frame (`fg_ari_after_first`: a
    conditional model got that frame's boxes), the share of objects kept by one slot in every
    frame (`tracked`) and the identity switches."""
    values = {"mse": ((out.target.float() - target.float()) ** 2).flatten(1).mean(dim=1)}
    if "masks" in batch:
        ids, masks = batch["masks"].to(out.masks.device), out.masks.float()
        values.update(video_segmentation_metrics(ids, masks))
        if ids.shape[1] > 1:
            values["fg_ari_after_first"] = video_segmentation_metrics(
                ids, masks, skip_first_frame=True)["fg_ari"]
        tracking = tracking_metrics(ids, masks)
        values["tracked"] = tracking["tracked"]
        values["id_switches"] = tracking["id_switches"].float()
    return values


def evaluate_video(model: nn.Module, dataset: Dataset, num: int | None, batch_size: int,
                   seed: int, device: str | torch.device, bf16: bool) -> dict[str, Any]:
    """`evaluate` of a SAVi model: `video_metrics` averaged over the first `num` videos (a
    Gaussian initializer's starting slots drawn from a generator seeded with `seed`)."""
    from slotlab.train.step import video_forward, video_target

    was_training = model.training
    model.eval()
    n = len(dataset) if num is None else min(num, len(dataset))
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=False)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    means = NanMean()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        noise = slot_noise(model, batch["video"].shape[0], generator).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = video_forward(model, batch, noise)
        means.add(video_metrics(out, batch, video_target(model, batch)))
    model.train(was_training)
    return {"num_videos": n, "seed": seed, **means.result()}


def data_options(cfg: TrainConfig, spec: str) -> dict[str, Any]:
    """The data options `spec` is built with: the run's (for other data than the run's own,
    those its kind takes), and the model's resolution where none is set (images are resized to
    what the model reads). An option the run's own data does not take is one ConfigError line."""
    options = cfg.data_options.kwargs()
    if spec == cfg.data:
        check_options(spec, options)
    else:
        options, _ = options_for(spec, options)
    if "resolution" in kind_options(spec):
        options.setdefault("resolution", cfg.model.resolution)
    return options


def build_eval_dataset(cfg: TrainConfig, train_set: Dataset) -> tuple[Dataset, str]:
    """The data a run evaluates on and its split: `eval_data` when
    set (a folder is read whole), else the held-out split of the training data (a flat folder's
    held-out tenth); the training split, with a note, where the data has none. A `num` option
    sizes the training set; only the items evaluation reads are asked for (`eval_num`, and the
    `test_time_num` after them a run that chooses its test-time settings scores)."""
    spec = cfg.eval_data or cfg.data
    split = "all" if cfg.eval_data and parse_spec(spec)[0] == "folder" else cfg.eval_split
    options = data_options(cfg, spec)
    if "num" in options:
        options["num"] = min(int(options["num"]),
                             cfg.eval_num + (cfg.test_time_num if cfg.chooses_test_time else 0))
    try:
        dataset = build_dataset(spec, split, cfg.task, **options)
    except DataError as exc:
        if cfg.eval_data:
            raise
        print(f"note: evaluating on the training split ({exc})", file=sys.stderr)
        dataset, split = train_set, "train"
    return dataset, split


def untrained_model(task: str, config: Any, seed: int) -> nn.Module:
    """A freshly initialised model of `config` with the weights a run of `seed` starts from
    (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(task, config)


HEADLINE = {"object_discovery": (("fg_ari", "FG-ARI"), ("mbo", "mBO"), ("ari", "ARI"),
                                 ("mse", "MSE")),
            "set_prediction": (("ap_inf", "AP@inf"), ("ap_1", "AP@1"), ("ap_0.5", "AP@0.5")),
            "video": (("fg_ari", "FG-ARI"), ("mbo", "mBO"), ("tracked", "tracked"),
                      ("ari", "ARI"), ("mse", "MSE"))}


def num_scored(metrics: dict[str, Any]) -> str:
    """"256 images" or "64 videos": what an evaluation scored."""
    if "num_videos" in metrics:
        return f"{metrics['num_videos']} videos"
    return f"{metrics.get('num_images', 0)} images"


def headline(task: str, metrics: dict[str, Any]) -> str:
    """The task's headline metrics in one line, each with the untrained model's figure beside
    it when `metrics["untrained"]` has it: "FG-ARI 0.912 (untrained 0.571), mBO ..."."""
    untrained = metrics.get("untrained") or {}
    parts = []
    for key, name in HEADLINE.get(task, ()):
        if key not in metrics:
            continue
        text = f"{name} {metrics[key]:.4g}" if key == "mse" else f"{name} {metrics[key]:.3f}"
        if key in untrained:
            before = f"{untrained[key]:.4g}" if key == "mse" else f"{untrained[key]:.3f}"
            text += f" (untrained {before})" if not parts else f" ({before})"
        parts.append(text)
    return ", ".join(parts)


def untrained_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers of an evaluation worth keeping beside a trained model's."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, float) and k not in ("seed",)}


@torch.no_grad()
def save_pictures(model: nn.Module, dataset: Dataset, task: str, seed: int, path: Path,
                  device: torch.device, num: int = 8) -> None:
    """Slot pictures of the first `num` images of `dataset` (slot noise seeded with `seed`) as
    a PNG at `path` (a video model: the frames x slots sheet of the first video and, beside it,
    an animated GIF of the first four); nothing where the visualisation extra is not
    installed."""
    try:
        from slotlab.train.visualize import object_discovery_figure, set_prediction_figure
    except ImportError:
        return

    batch = default_collate([dataset[i] for i in range(min(num, len(dataset)))])
    if task == "video":
        from slotlab.train.visualize_video import save_video_pictures

        save_video_pictures(model, {k: v.to(device) for k, v in batch.items()}, seed, path)
        return
    image = normalize_batch_image(batch["image"].to(device))
    was_training = model.training
    model.eval()
    noise = slot_noise(model, image.shape[0], torch.Generator().manual_seed(seed)).to(device)
    out = model(image, noise=noise, return_all_attention=True)
    model.train(was_training)
    if task == "object_discovery":
        figure = object_discovery_figure(image.cpu(), _to_cpu(out), num=num,
                                         cell_pixels=config_cell_pixels(model.config))
    else:
        figure = set_prediction_figure(image.cpu(), out.predictions.cpu(), batch.get("target"),
                                       num=num)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(path)


def _to_cpu(out: Any) -> Any:
    """A model output dataclass with its tensors (and lists of tensors) on the CPU."""
    values = {}
    for f in dataclasses.fields(out):
        v = getattr(out, f.name)
        values[f.name] = [t.cpu() for t in v] if isinstance(v, list) else (
            v.cpu() if isinstance(v, torch.Tensor) else v)
    return type(out)(**values)
