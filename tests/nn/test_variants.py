"""Slot Attention variants change the model as described, and each trains for a few steps."""

import json
import math

import pytest
import torch

from slotlab.cli import main
from slotlab.models import SlotAttentionAutoEncoder
from slotlab.nn import SlotAttention
from tests.train.helpers import TINY_ARGS, TINY_MODEL, write_folder, write_preset


def make(**kw):
    torch.manual_seed(0)
    return SlotAttention(num_slots=4, num_iterations=3, slot_size=16, mlp_hidden_size=32,
                         input_size=8, **kw)


def grads(module, loss):
    module.zero_grad()
    loss.backward()
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in module.named_parameters()}


def test_implicit_differentiation_only_last_iteration_gets_gradient():
    x, noise = torch.randn(2, 10, 8), torch.randn(2, 4, 16)
    plain, implicit = make(), make(implicit_differentiation=True)
    implicit.load_state_dict(plain.state_dict())
    out_plain, _ = plain(x, noise=noise)
    out_implicit, _ = implicit(x, noise=noise)
    torch.testing.assert_close(out_plain, out_implicit)  # same forward pass
    g = grads(implicit, out_implicit.square().sum())
    assert g["slots_mu"] is None and g["slots_log_sigma"] is None  # no path to the init
    # reference: T-1 iterations without gradient, then one iteration with it
    ref = make()
    ref.load_state_dict(plain.state_dict())
    with torch.no_grad():
        warm, _ = ref(x, noise=noise, num_iterations=2)
    inputs = ref.norm_inputs(x)
    last, _ = ref.step(warm, ref.project_k(inputs), ref.project_v(inputs), 16**-0.5)
    g_ref = grads(ref, last.square().sum())
    for name in ("project_q.weight", "project_k.weight", "gru.weight_hh", "mlp.0.weight"):
        torch.testing.assert_close(g[name], g_ref[name])
    g_plain = grads(plain, plain(x, noise=noise)[0].square().sum())
    assert not torch.allclose(g["project_q.weight"], g_plain["project_q.weight"])


def test_learned_initialisation_bo_qsa():
    x = torch.randn(2, 10, 8)
    sa = make(slot_init="learned")
    names = {n for n, _ in sa.named_parameters()}
    assert "slots_queries" in names and "slots_mu" not in names
    assert sa.slots_queries.shape == (1, 4, 16)
    a, _ = sa(x, noise=torch.randn(2, 4, 16))
    b, _ = sa(x)
    torch.testing.assert_close(a, b)  # deterministic: no sampling
    g = grads(sa, a.square().sum())
    assert g["slots_queries"] is not None and g["slots_queries"].abs().sum() > 0
    # straight-through: the queries get the gradient the last iteration gives its input slots
    with torch.no_grad():
        warm, _ = sa(x, num_iterations=2)
    start = warm.clone().requires_grad_(True)
    inputs = sa.norm_inputs(x)
    last, _ = sa.step(start, sa.project_k(inputs), sa.project_v(inputs), 16**-0.5)
    last.square().sum().backward()
    torch.testing.assert_close(g["slots_queries"][0], start.grad.sum(0))
    with pytest.raises(ValueError, match="learned slot initialisation has 4 slots"):
        sa(x, num_slots=6)


def test_test_time_slots_and_iterations():
    model = SlotAttentionAutoEncoder(**TINY_MODEL)
    out = model(torch.rand(2, 3, 32, 32), num_slots=7, num_iterations=5,
                return_all_attention=True)
    assert out.masks.shape == (2, 7, 1, 32, 32) and len(out.attention_per_iteration) == 5


@pytest.mark.parametrize("extra", [["--implicit-diff"], ["--slot-init", "learned"],
                                   ["--grad-clip", "0.05"]])
def test_variant_trains_and_evaluates(tmp_path, extra, monkeypatch, capsys):
    data = write_folder(tmp_path / "data")
    preset = write_preset(tmp_path / "tiny.yaml")
    calls = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        calls.append(max_norm)
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS, *extra]) == 0
    config = json.loads((run / "model" / "config.json").read_text())["config"]
    if "--implicit-diff" in extra:
        assert config["implicit_differentiation"] is True
    if "learned" in extra:
        assert config["slot_init"] == "learned"
    assert calls == ([0.05] * 6 if "--grad-clip" in extra else [])
    capsys.readouterr()
    assert main(["eval", str(run), "--num", "8", "--json", "--num-iterations", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_iterations"] == 5 and "fg_ari" in result
    assert -1.0 <= result["fg_ari_attn"] <= 1.0 or math.isnan(result["fg_ari_attn"])
    if "learned" in extra:  # K is fixed by the learned queries: one error line, not a no-op
        assert main(["eval", str(run), "--num", "8", "--num-slots", "6"]) != 0
        assert "cannot be evaluated with 6 slots" in capsys.readouterr().err
    else:
        assert main(["eval", str(run), "--num", "8", "--json", "--num-slots", "6"]) == 0
        assert json.loads(capsys.readouterr().out)["num_slots"] == 6
