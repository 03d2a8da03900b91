"""The training step in passes (`micro_batch`): the same loss and gradients as the whole batch
in one pass, for every task."""

import warnings

import pytest
import torch
from torch.utils.data import default_collate

from slotlab.data import build_dataset
from slotlab.errors import ConfigError
from slotlab.train.config import make_config
from slotlab.train.runtime import has_cpp_compiler
from slotlab.train.step import CPU_MICRO_BATCH, accumulate_gradients, build_state
from tests.train.helpers import TINY_MODEL

SETTINGS = {
    "object_discovery": dict(data="procedural-sprites", model=TINY_MODEL,
                             data_options={"resolution": [32, 32], "num": 16}),
    "set_prediction": dict(data="procedural",
                           model={"resolution": [32, 32], "num_slots": 10, "slot_size": 16,
                                  "mlp_hidden_size": 32, "encoder_channels": [16, 16, 16, 16]},
                           data_options={"resolution": [32, 32], "num": 16}),
    "video": dict(data="procedural-video-sprites",
                  model={"resolution": [16, 16], "num_slots": 4, "slot_size": 16,
                         "encoder_channels": [8, 8], "decoder_channels": [8, 8],
                         "decoder_strides": [2, 1], "initializer": "learned"},
                  data_options={"resolution": [16, 16], "num": 16, "num_frames": 2}),
}


def gradients(task, micro_batch, compile=False, bf16=False, **options):
    cfg = make_config(None, task=task, batch_size=6, micro_batch=micro_batch, bf16=bf16,
                      compile=compile, **SETTINGS[task], **options)  # float32 unless asked
    torch.manual_seed(0)
    state = build_state(cfg, torch.device("cpu"))
    dataset = build_dataset(cfg.data, "train", task, **cfg.data_options.kwargs())
    batch = state.prepare_batch(default_collate([dataset[i] for i in range(6)]))
    noise = torch.randn(6, state.model.num_slots, state.model.slot_size,
                        generator=torch.Generator().manual_seed(1))
    loss = accumulate_gradients(state, batch, noise)
    return state.micro_batch, loss, {n: p.grad.clone() for n, p in state.model.named_parameters()
                                     if p.grad is not None}


@pytest.mark.parametrize("task", list(SETTINGS))
def test_passes_of_a_step_sum_to_the_whole_batch(task):
    whole_size, whole_loss, whole = gradients(task, None)
    parts_size, parts_loss, parts = gradients(task, 4)  # passes of 4 and 2 examples
    assert whole_size == CPU_MICRO_BATCH and parts_size == 4
    torch.testing.assert_close(parts_loss, whole_loss, rtol=1e-5, atol=1e-6)
    assert whole.keys() == parts.keys() and len(whole) > 5
    biggest = max(float(g.abs().max()) for g in whole.values())
    for name, grad in whole.items():  # float32 sums in another order
        torch.testing.assert_close(parts[name], grad, rtol=1e-4, atol=1e-5 * biggest,
                                   msg=name)


@pytest.mark.skipif(not has_cpp_compiler(),
                    reason="torch.compile on the CPU builds its kernels with a C++ compiler")
@pytest.mark.parametrize("task", list(SETTINGS))
def test_compiled_step_gives_the_plain_steps_loss_and_gradients(task):
    """torch.compile (on by default for long bf16 runs on CPUs with AMX): the same loss and
    gradients as the plain model in float32, and no warnings on the way."""
    _, plain_loss, plain = gradients(task, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, compiled_loss, compiled = gradients(task, None, compile=True)
    # what a user sees by default (torch's own DeprecationWarnings are hidden outside __main__)
    assert not [f"{w.category.__name__}: {w.message}" for w in caught
                if not issubclass(w.category, DeprecationWarning)]
    torch.testing.assert_close(compiled_loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert compiled.keys() == plain.keys()
    biggest = max(float(g.abs().max()) for g in plain.values())
    for name, grad in plain.items():  # fused kernels sum the bias gradients in another order
        torch.testing.assert_close(compiled[name], grad, rtol=1e-3, atol=1e-4 * biggest,
                                   msg=name)


def test_compile_by_default_that_cannot_build_trains_uncompiled(monkeypatch, tmp_path):
    """Compiling by default never stops a run: where the backend cannot build (here a C++
    compiler that does not exist), the step warns and runs uncompiled, with the plain loss."""
    from slotlab.train import runtime

    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # nothing built before
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("no-such-c++",))
    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)
    _, plain_loss, plain = gradients("object_discovery", None, bf16=True)
    torch._dynamo.reset()
    try:  # bf16: the arithmetic that compiles by default
        _, loss, grads = gradients("object_discovery", None, compile=None, bf16=True,
                                   steps=30_000)
    finally:
        torch._dynamo.reset()
    assert torch._dynamo.config.suppress_errors  # the default chose to compile
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-7)
    assert grads.keys() == plain.keys()


def test_micro_batch_must_be_positive():
    with pytest.raises(ConfigError, match="micro_batch must be >= 1, got 0"):
        make_config(None, micro_batch=0)
