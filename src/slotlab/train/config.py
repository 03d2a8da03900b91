"""Training configuration: one typed dataclass, named presets (`configs/*.yaml`), the LR schedule.

`TrainConfig` nests the model's config (`ObjectDiscoveryConfig` or `SetPredictionConfig`) and the
data options (`DataOptions`). A preset, a run's `config.yaml` and the command line's flags are all
this dataclass: `config_from_dict` reads one and validates every key, `to_dict` writes one out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from slotlab.errors import ConfigError
from slotlab.models import CONFIGS, ModelConfig, model_config
from slotlab.schema import from_dict, option, to_dict
from slotlab.tasks import normalize_task

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class DataOptions:
    """Options of the dataset named by the data spec (None: the dataset's default). Each kind of
    dataset takes the options it understands (`slotlab.data.build_dataset`)."""

    resolution: tuple[int, int] | None = option(None, "image (H, W) the data is resized to")
    num: int | None = option(None, "number of generated scenes (procedural data)")
    seed: int | None = option(None, "generator seed (procedural data)")
    min_objects: int | None = option(None, "fewest objects per scene (procedural data)")
    max_objects: int | None = option(None, "most objects per scene")
    background: str | None = option(None, "sprite background (procedural sprites)")
    crop: str | tuple[int, int, int, int] | None = option(
        None, "'official' or (r0, r1, c0, c1) of the source frame")
    supersample: int | None = option(None, "samples per pixel side (procedural CLEVR-style)")
    min_pixels: int | None = option(None, "visible pixels each generated object needs")
    variant: str | None = option(None, "multi-dsprites variant")
    cache_dir: str | None = option(None, "where TFRecord indexes are cached")
    num_eval_examples: int | None = option(None, "tfds-clevr: images of the train_eval split")
    verify_crc: bool | None = option(None, "check TFRecord CRCs while reading")
    num_frames: int | None = option(None, "frames per clip (procedural video)")
    min_speed: float | None = option(None, "slowest object, image sides per frame (video)")
    max_speed: float | None = option(None, "fastest object, image sides per frame (video)")
    rotation_speed: float | None = option(None, "largest spin, degrees per frame (video)")

    def kwargs(self) -> dict[str, Any]:
        """The options that are set, as keyword arguments of `build_dataset`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; written to RUN_DIR/config.yaml. Defaults are the
    official object-discovery settings."""

    task: str = option("object_discovery", "object_discovery, set_prediction or video")
    data: str = option("procedural", "data spec, e.g. procedural-sprites, clevr:PATH, folder:DIR")
    preset: str | None = option(None, "the preset the run started from")
    model: ModelConfig | None = option(None, "the model's config (default: the task's official)")
    data_options: DataOptions = option(DataOptions(), "options of the dataset")
    batch_size: int = option(64, "global batch size (split over torchrun processes)")
    steps: int = option(500_000, "training steps (a larger value extends a finished run)")
    learning_rate: float = option(4e-4, "peak Adam learning rate")
    warmup_steps: int = option(10_000, "linear learning-rate warm-up steps")
    lr_schedule: Literal["exponential", "cosine"] = option(
        "exponential", "after the warm-up: exponential (Slot Attention: decay_rate per "
        "decay_steps) or cosine (SAVi: to 0 at `steps`)")
    decay_rate: float = option(0.5, "learning-rate decay factor per decay_steps (exponential)")
    decay_steps: int = option(100_000, "steps over which the learning rate decays by decay_rate")
    seed: int = option(0, "seed of the weights, the data order and the slot noise")
    device: str = option("auto", "auto (CUDA if available), cpu or cuda")
    bf16: bool | None = option(
        None, "bf16 autocast (default: on for a CPU with AVX512-BF16 or AMX, where it trained at "
        "0.93-3x float32's speed; off on other CPUs, which emulate it, and on CUDA)")
    compile: bool | None = option(
        None, "torch.compile the model (default: on for bf16 runs on a CPU with AMX of 3,000 "
        "steps and 10 minutes or more, where it trained faster, compile time counted; off "
        "elsewhere)")
    cuda_graphs: bool = option(False, "CUDA graphs (torch.compile mode reduce-overhead)")
    pad_last_layer: int | None = option(
        None, "compute the 4-channel last decoder layer padded to N outputs (default: 8 on CUDA, "
        "off on the CPU)")
    channels_last: bool | None = option(
        None, "channels_last memory format (default: on for CUDA, for set prediction on the "
        "CPU, and for object discovery on a CPU with AMX)")
    reuse_memory: bool | None = option(
        None, "keep the memory a step frees in the process for the next step instead of "
        "returning it to the system (default: on for the CPU under Linux/glibc, where the "
        "official models trained 1.24-1.34x and inferred 1.11-1.62x as fast, for a 12-26% higher "
        "peak)")
    micro_batch: int | None = option(
        None, "examples per forward/backward pass, the gradients of a step summed over them "
        "(same step, less memory; default: 64 on the CPU, the whole batch on CUDA)")
    num_workers: int | None = option(None, "data loader worker processes (default: by data)")
    grad_clip: float | None = option(None, "clip the global gradient norm to this value")
    ema_decay: float | None = option(
        None, "evaluate and save an exponential moving average of the weights (e.g. 0.999)")
    log_every: int = option(100, "steps between training-loss lines")
    eval_every: int = option(5_000, "steps between evaluations")
    eval_num: int = option(256, "held-out images per evaluation")
    eval_split: str = option("val", "split evaluated during training")
    eval_data: str | None = option(
        None, "data spec evaluated during training (default: the held-out split of --data; a "
        "folder given here is evaluated whole)")
    test_time_slots: tuple[int, ...] = option(
        (), "after the last step, choose evaluation's number of slots among these (Gaussian "
        "initial slots) by FG-ARI on held-out images no evaluation scores (train/test_time.py)")
    test_time_iterations: tuple[int, ...] = option(
        (), "after the last step, choose evaluation's Slot Attention iterations among these, "
        "the same way")
    test_time_num: int = option(
        256, "held-out images the test-time choice scores (those after the eval_num evaluated)")
    image_every: int = option(5_000, "steps between slot pictures")
    checkpoint_every: int = option(1_000, "steps between checkpoints")
    keep_checkpoints: int = option(3, "checkpoints kept in the run directory")
    deterministic: bool = option(False, "deterministic algorithms only (slower)")
    max_minutes: float | None = option(
        None, "training wall-clock budget in minutes (evaluation not counted)")

    def __post_init__(self) -> None:
        task = normalize_task(self.task)
        object.__setattr__(self, "task", task)
        model = self.model
        if model is None or isinstance(model, dict):
            model = model_config(task, model)
        elif not isinstance(model, CONFIGS[task]):
            raise ConfigError(f"the task {task} needs a {CONFIGS[task].__name__}, got "
                              f"{type(model).__name__}")
        object.__setattr__(self, "model", model)
        if self.micro_batch is not None and self.micro_batch < 1:
            raise ConfigError(f"micro_batch must be >= 1, got {self.micro_batch}")
        for name in ("batch_size", "steps", "log_every", "eval_every", "eval_num", "image_every",
                     "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0 or self.decay_steps < 1 or not self.decay_rate > 0:
            raise ConfigError("warmup_steps must be >= 0, decay_steps >= 1 and decay_rate > 0")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be between 0 and 1 (e.g. 0.999), got "
                              f"{self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip must be > 0, got {self.grad_clip}")
        if self.chooses_test_time:
            self._check_test_time()
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"max_minutes must be > 0, got {self.max_minutes}")

    @property
    def chooses_test_time(self) -> bool:
        """Whether the run chooses evaluation's K and T after its last step."""
        return bool(self.test_time_slots or self.test_time_iterations)

    def _check_test_time(self) -> None:
        if self.task != "object_discovery":
            raise ConfigError("test_time_slots / test_time_iterations are chosen by FG-ARI: "
                              "object discovery only")
        values = (*self.test_time_slots, *self.test_time_iterations, self.test_time_num)
        if min(values) < 1:
            raise ConfigError("test_time_slots, test_time_iterations and test_time_num must be "
                              ">= 1")
        if (self.model.slot_init == "learned"
                and set(self.test_time_slots) - {self.model.num_slots}):
            raise ConfigError(f"test_time_slots needs Gaussian initial slots: slot_init learned "
                              f"fixes K = {self.model.num_slots}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` (validated as a whole)."""
        return config_from_dict({**self.to_dict(), **changes})


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error (PyYAML keeps
    the last value silently, so a preset with `locality_width` twice would run the second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be repeated
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is an empty mapping, a key given twice is an
    error); one line otherwise."""
    try:
        values = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
    except yaml.MarkedYAMLError as err:
        where = f", line {err.problem_mark.line + 1}" if err.problem_mark else ""
        raise ConfigError(f"{what} {path} is not valid YAML ({err.problem}{where})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{what} {path} is not valid YAML ({first})") from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read ({err.strerror})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{what} {path} does not hold a mapping of settings")
    return values


def load_preset(name: str) -> dict[str, Any]:
    """The settings of preset `name` (a file in configs/, or a path to a YAML file)."""
    path = Path(name)
    if not path.is_file():
        path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    return read_yaml(path, "preset file")


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A `TrainConfig` from plain values (a preset, a saved config.yaml): the task is read first,
    so that `model` is checked against that task's model config."""
    values = dict(values)
    values["task"] = normalize_task(values.get("task", "object_discovery"))
    model = values.get("model")
    if model is not None and not dataclasses.is_dataclass(model):
        values["model"] = model_config(values["task"], model)
    return from_dict(TrainConfig, values, where="config")


def make_config(preset: str | None = None, **overrides: Any) -> TrainConfig:
    """Preset values, then `overrides` (None values are ignored; `model` and `data_options`
    mappings update the preset's key by key). With other `data` than the preset's, the preset's
    data options that its kind does not take are left out (e.g. a generator's `background` with
    a folder), and so is its `num` with data of another kind (how many scenes the preset's
    generator makes, not how many to read of a cache or folder); options given in `overrides`
    are always kept (and checked by the dataset)."""
    values: dict[str, Any] = {}
    if preset:
        values.update(load_preset(preset))
        values["preset"] = preset
    preset_data = values.get("data")
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("model", "data_options") and isinstance(value, dict):
            value = {**(values.get(key) or {}), **value}
        values[key] = value
    new_data = overrides.get("data")
    if preset and new_data and values.get("data_options"):  # the preset's options, other data
        from slotlab.data.build import options_for, parse_spec

        given = overrides.get("data_options") or {}
        preset_options = {k: v for k, v in values["data_options"].items() if k not in given}
        if not preset_data or parse_spec(new_data)[0] != parse_spec(preset_data)[0]:
            preset_options.pop("num", None)
        kept, _ = options_for(new_data, preset_options)
        values["data_options"] = {**kept, **given}
    return config_from_dict(values)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate at `step` (0-based, before the update); 0 at step 0.

    exponential (official Slot Attention): linear warm-up times decay_rate ** (step /
    decay_steps); the decay also applies during the warm-up.
    cosine (official SAVi, optax `warmup_cosine_decay_schedule` to 0 with decay_steps = the
    run's steps): linear warm-up to the peak, then 0.5 * (1 + cos(pi * progress)) over the
    remaining steps.
    """
    warmup = step / cfg.warmup_steps if step < cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "cosine":
        progress = max(0, step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.learning_rate * warmup * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.learning_rate * warmup * cfg.decay_rate ** (step / cfg.decay_steps)
