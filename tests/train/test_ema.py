"""EMA of the weights: the stated average, the decay warm-up, and a training run that evaluates,
checkpoints, resumes and saves the averaged weights."""

import pytest
import torch
from torch import nn

from slotlab.cli import main
from slotlab.train.checkpoint import list_checkpoints, load_checkpoint, load_model
from slotlab.train.ema import ema_decay_at, make_ema, update_ema
from tests.train.helpers import write_folder, write_preset
from tests.train.test_train import expect_error, train_cmd


def test_update_is_the_stated_average():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    model.register_buffer("counter", torch.zeros(()))
    ema = make_ema(model)
    assert not any(p.requires_grad for p in ema.parameters())
    old = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.mul_(-2.0)
        model.counter.fill_(5)
    update_ema(ema, model, 0.75)
    for name in ("weight", "bias"):
        expected = 0.75 * old[name] + 0.25 * getattr(model, name)
        torch.testing.assert_close(getattr(ema, name), expected, rtol=0, atol=1e-7)
        assert not torch.equal(getattr(ema, name), getattr(model, name))
    assert ema.counter.item() == 5  # buffers are copied, not averaged


def test_decay_warm_up():
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 100) == pytest.approx(101 / 110)
    assert ema_decay_at(0.999, 100_000) == 0.999
    assert ema_decay_at(0.5, 20) == 0.5


@pytest.fixture
def setup(tmp_path):
    return write_folder(tmp_path / "data"), write_preset(tmp_path / "tiny.yaml")


def test_training_keeps_evaluates_and_saves_the_average(setup, tmp_path):
    data, preset = setup
    run = tmp_path / "run"
    assert main(train_cmd(data, run, preset, "--ema-decay", "0.9", "--checkpoint-every", "1")) == 0
    (s5, p5), (s6, p6) = list_checkpoints(run)[-2:]
    assert (s5, s6) == (5, 6)
    c5, c6 = load_checkpoint(p5), load_checkpoint(p6)
    d = ema_decay_at(0.9, 6)  # min(0.9, 7 / 16)
    buffers = dict(load_model(run)[0].named_buffers())
    for k, v in c6["ema"].items():
        if not v.is_floating_point():
            continue
        if k in buffers:
            assert torch.equal(v, c6["model"][k]), k  # buffers follow the model
            continue
        torch.testing.assert_close(v, d * c5["ema"][k] + (1 - d) * c6["model"][k],
                                   rtol=1e-6, atol=1e-6)
    assert any(not torch.equal(c6["ema"][k], c6["model"][k]) for k in c6["ema"])
    # `slotlab eval RUN` and the final model directory use the averaged weights
    model, _ = load_model(run)
    for k, v in model.state_dict().items():
        assert torch.equal(v, c6["ema"][k]), k
    saved, _ = load_model(run / "model")
    for k, v in saved.state_dict().items():
        assert torch.equal(v, c6["ema"][k]), k


def test_resume_keeps_the_average(setup, tmp_path):
    data, preset = setup
    straight, resumed = tmp_path / "a", tmp_path / "b"
    assert main(train_cmd(data, straight, preset, "--ema-decay", "0.9")) == 0
    first = train_cmd(data, resumed, preset, "--ema-decay", "0.9")
    first[first.index("--steps") + 1] = "2"
    assert main(first) == 0
    assert main(train_cmd(data, resumed, preset, "--ema-decay", "0.9")) == 0
    a = load_checkpoint(list_checkpoints(straight)[-1][1])["ema"]
    b = load_checkpoint(list_checkpoints(resumed)[-1][1])["ema"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_decay_is_refused(setup, tmp_path, capsys):
    data, preset = setup
    expect_error(train_cmd(data, tmp_path / "r", preset, "--ema-decay", "1.5"), capsys,
                 "ema_decay must be between 0 and 1")
