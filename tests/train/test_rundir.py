"""The run directory's logs: metrics.jsonl and TensorBoard (one event file, curves without
overlapping steps after a resume, slot pictures as images), and their failures."""

import json
import time

import numpy as np
import pytest
from PIL import Image

from slotlab.cli import main
from slotlab.train.checkpoint import list_checkpoints
from slotlab.train.rundir import MetricsLog
from tests.train.helpers import TINY_ARGS, write_folder, write_preset

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter


def read_events(run):
    """An EventAccumulator over RUN/tensorboard with everything loaded (nothing sampled)."""
    acc = event_accumulator.EventAccumulator(
        str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def scalar_steps(acc):
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_continuous(acc):
    for tag, steps in scalar_steps(acc).items():
        assert steps == sorted(set(steps)), (tag, steps)  # strictly increasing, no duplicates


def train_args(data, run, preset, steps):
    args = ["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
            "--preset", str(preset), *TINY_ARGS]
    args[args.index("--steps") + 1] = str(steps)
    return args


def test_resumed_run_has_one_event_file_with_continuous_curves_and_pictures(tmp_path):
    """Trained to step 6, the newest checkpoint lost (as when a run is killed between
    checkpoints), resumed from step 4 to 8: steps 5 and 6 are logged again, and TensorBoard
    shows each of them once."""
    data, preset = write_folder(tmp_path / "data"), write_preset(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    assert main(train_args(data, run, preset, 6)) == 0
    first = read_events(run)
    assert scalar_steps(first)["train/loss"] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in first.Images("slots")] == [3, 6]
    list_checkpoints(run)[-1][1].unlink()  # resume from step 4
    assert main(train_args(data, run, preset, 8)) == 0

    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    acc = read_events(run)
    assert_continuous(acc)
    steps = scalar_steps(acc)
    assert steps["train/loss"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert steps["eval/mse"] == [3, 6, 8]
    assert [e.step for e in acc.Images("slots")] == [3, 6, 8]
    picture = acc.Images("slots")[-1]
    with Image.open(run / "images" / "step_00000008.png") as png:
        assert (picture.width, picture.height) == png.size
    # the steps kept from before the resume keep their values; metrics.jsonl agrees
    before = {e.step: e.value for e in first.Scalars("train/loss")}
    after = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert all(after[s] == pytest.approx(before[s]) for s in (1, 2, 3, 4))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6, 7, 8]


def write_events(folder, values, purge_step=None):
    """An event file of scalars `values` [(tag, step, value)] (written by torch's writer)."""
    writer = SummaryWriter(str(folder), purge_step=purge_step)
    for tag, step, value in values:
        writer.add_scalar(tag, value, step)
    writer.close()
    time.sleep(1.1)  # the next file gets a later name


def test_old_event_files_are_merged_into_one(tmp_path):
    """Event files of earlier versions (one per resume, a restart marker in each): what
    TensorBoard showed up to the resumed step is carried into the one new file."""
    folder = tmp_path / "tensorboard"
    write_events(folder, [("train/loss", s, float(s)) for s in range(1, 8)])
    # resumed from step 4 by an older slotlab: purge marker at 5, steps 5..9 again
    write_events(folder, [("train/loss", s, 10.0 + s) for s in range(5, 10)], purge_step=5)
    assert len(list(folder.iterdir())) == 2

    log = MetricsLog(tmp_path, resume_step=8)
    log.log({"step": 9, "loss": 99.0}, "train")
    log.close()

    assert len(list(folder.iterdir())) == 1
    acc = read_events(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 15.0), (6, 16.0), (7, 17.0), (8, 18.0),
        (9, 99.0)]


def test_metrics_log_resume_drops_later_and_damaged_lines(tmp_path):
    """A line cut short by a killed process does not stop the resume."""
    lines = [json.dumps({"step": s, "loss": 0.5}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    log = MetricsLog(tmp_path, resume_step=2)
    log.log({"step": 3, "loss": 0.25}, "train")
    log.close()
    steps = [json.loads(line)["step"]
             for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_log_image_takes_a_picture_or_its_file(tmp_path):
    log = MetricsLog(tmp_path, resume_step=0)
    pixels = np.zeros((12, 20, 3), np.uint8)
    pixels[:, :10, 0] = 255
    log.log_image("slots", Image.fromarray(pixels), 1)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    log.log_image("slots", tmp_path / "p.png", 2)
    log.log_image("slots", tmp_path / "missing.png", 3)  # no picture written: nothing logged
    log.close()
    images = read_events(tmp_path).Images("slots")
    assert [(e.step, e.width, e.height) for e in images] == [(1, 20, 12), (2, 20, 12)]


def test_a_failing_tensorboard_writer_is_one_warning(tmp_path, capsys):
    """TensorBoard failing (e.g. its disk filling up) stops only the TensorBoard events, with
    one warning; metrics.jsonl keeps every value."""
    log = MetricsLog(tmp_path, resume_step=0)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    log.writer.add_scalar = full
    log.log({"step": 1, "loss": 0.5}, "train")
    log.log({"step": 2, "loss": 0.4}, "train")
    log.close()
    err = capsys.readouterr().err
    assert err.count("warning: TensorBoard events are no longer written") == 1, err
    assert "No space left on device" in err and "Traceback" not in err
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_metrics_log_write_failure_is_one_error(tmp_path):
    from slotlab.errors import SlotlabError

    log = MetricsLog(tmp_path, resume_step=0)

    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    log.file = Full()
    with pytest.raises(SlotlabError, match="could not write metrics log .*No space left"):
        log.log({"step": 1, "loss": 0.5}, "train")
    log.close()
