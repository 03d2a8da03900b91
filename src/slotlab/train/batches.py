"""The training data of a run and its order: batch s is a function of (seed, s) alone, so a
resumed run reads the same batches as an uninterrupted one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from slotlab.data import build_dataset
from slotlab.data.build import default_num_workers
from slotlab.errors import ConfigError, SlotlabError
from slotlab.train.checkpoint import list_checkpoints
from slotlab.train.config import TrainConfig
from slotlab.train.evaluate import data_options
from slotlab.train.runtime import loader_worker_init


class StepBatchSampler(Sampler[list[int]]):
    """Batches of indices for steps `start_step, start_step + 1, ...` (endless).

    Epoch e uses the permutation `randperm(n)` of a generator seeded with (seed, e); step s is
    batch s % batches_per_epoch of epoch s // batches_per_epoch (the last partial batch of an
    epoch is dropped, as the official `drop_remainder=True`). Resuming needs only the step.
    `part=(lo, hi)` yields only the slice [lo:hi] of each global batch (one DDP rank's share).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0,
                 part: tuple[int, int] | None = None):
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.batches_per_epoch = n // batch_size
        self.part = part or (0, batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        epoch, perm = -1, None
        while True:
            e, b = divmod(step, self.batches_per_epoch)
            if e != epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
                epoch, perm = e, torch.randperm(self.n, generator=g)
            batch = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch[self.part[0] : self.part[1]].tolist()
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return sys.maxsize


def build_train_dataset(cfg: TrainConfig) -> Dataset:
    """The training split of `cfg.data` (a cache is read as uint8, normalised on the device)."""
    options = data_options(cfg, cfg.data)
    if cfg.data.startswith("cache:"):
        options.setdefault("as_uint8", True)
    dataset = build_dataset(cfg.data, "train", cfg.task, **options)
    if cfg.batch_size > len(dataset):
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the training set of {cfg.data!r} "
            f"({len(dataset)} examples)"
        )
    return dataset


@contextmanager
def training_batches(cfg: TrainConfig, dataset: Dataset, start_step: int,
                     part: tuple[int, int], pin_memory: bool) -> Iterator[Iterator[dict]]:
    """The batches of steps `start_step, ...` (this process's `part` of each); the loader's
    workers are shut down on leaving, also after an error."""
    workers = cfg.num_workers
    if workers is None:  # memory-mapped caches are fastest read in the main process
        workers = 0 if cfg.data.startswith("cache:") else default_num_workers(len(dataset))
    loader = DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start_step, part),
        num_workers=workers,
        pin_memory=pin_memory,
        # its own generator: creating the iterator must not consume the global RNG (exact resume)
        generator=torch.Generator().manual_seed(cfg.seed * 7919 + start_step),
        worker_init_fn=loader_worker_init,
    )
    batches = iter(loader)
    try:
        yield batches
    finally:
        # shut the workers down now, not at interpreter exit (where it can hang when the error
        # came from a worker): a traceback keeps the iterator alive
        if hasattr(batches, "_shutdown_workers"):
            batches._shutdown_workers()


def worker_error_message(exc: Exception) -> str:
    """The original one-sentence message of an error re-raised from a DataLoader worker (torch
    wraps it in "Caught DataError in DataLoader worker process 0. Original Traceback ...")."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def next_batch(batches: Iterator[dict], step: int, run_dir: Path) -> dict:
    """The next batch; a data error (e.g. a file that became unreadable) is re-raised as one
    sentence that says where training stopped and which checkpoint is kept."""
    try:
        return next(batches)
    except SlotlabError as exc:
        kept = list_checkpoints(run_dir)
        last = (f"the last checkpoint (step {kept[-1][0]}) is kept in {run_dir}" if kept else
                f"no checkpoint was written yet in {run_dir}")
        raise type(exc)(
            f"{worker_error_message(exc)}; training stopped at step {step}, {last}") from None
