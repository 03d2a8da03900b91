"""The converted official checkpoints reproduce the official TF outputs, losses and gradients."""

import json

import numpy as np
import pytest
import torch

from slotlab.convert import TFCheckpoint, load_tf_checkpoint
from slotlab.tf_formats.official import NETWORK_PREFIX, VALUE_SUFFIX, _convert, _target
from slotlab.train.losses import hungarian_huber_loss, reconstruction_loss
from tests.conftest import reference_path

TASKS = ["object_discovery", "set_prediction"]


def load(task, device="cpu"):
    root = reference_path("official_tf", task)
    fx = np.load(root / "fixture.npz")
    model = load_tf_checkpoint(root, task).to(device)
    return root, fx, model


def nhwc(x):  # torch channels-first -> TF channels-last
    return x.movedim(-3, -1)


def run_forward(task, fx, model, device="cpu"):
    image = torch.from_numpy(fx["image"]).permute(0, 3, 1, 2).to(device)
    noise = torch.from_numpy(fx["slots_init_noise"]).to(device)
    return image, noise, model(image, noise=noise)


@pytest.mark.parametrize("task", TASKS)
def test_reader_checksums_match_variables_json(task):
    root = reference_path("official_tf", task)
    ckpt = TFCheckpoint(root)
    rows = json.loads((root / "variables.json").read_text())["variables"]
    assert set(ckpt.names()) == {r["name"] for r in rows}
    import zlib

    for r in rows:
        if "crc32" not in r:
            continue
        value = ckpt.read(r["name"])
        assert list(value.shape) == list(r["shape"])
        assert zlib.crc32(np.ascontiguousarray(value).tobytes()) == r["crc32"], r["name"]


@pytest.mark.parametrize("task", TASKS)
def test_outputs_match_official(task):
    _, fx, model = load(task)
    with torch.no_grad():
        _, _, out = run_forward(task, fx, model)
    if task == "object_discovery":
        pairs = {
            "recon_combined": nhwc(out.recon_combined),
            "recons": nhwc(out.recons),
            "masks": nhwc(out.masks),
            "slots": out.slots,
        }
    else:
        pairs = {"predictions": out.predictions, "slots": out.slots}
    for key, got in pairs.items():
        err = (got - torch.from_numpy(fx[key])).abs().max().item()
        assert err <= 1e-4, f"{key}: max abs error {err}"


@pytest.mark.parametrize("task", TASKS)
def test_bare_module_matches_official(task):
    _, fx, model = load(task)
    with torch.no_grad():
        noise = torch.from_numpy(fx["sa_module_slots_init_noise"])
        sa = model.slot_attention(torch.from_numpy(fx["sa_module_inputs"]),
                                  model.initial_slots(noise.shape[0], noise=noise))
        slots, attn = sa.slots, sa.attention
    err = (slots - torch.from_numpy(fx["sa_module_slots"])).abs().max().item()
    assert err <= 1e-4
    assert attn.shape == (2, fx["sa_module_slots"].shape[1], 50)
    torch.testing.assert_close(attn.sum(1), torch.ones(2, 50))


def test_set_prediction_slot_attention_inputs_match():
    _, fx, model = load("set_prediction")
    image = torch.from_numpy(fx["image"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        inputs = model.encode(image)
    err = (inputs - torch.from_numpy(fx["slot_attention_inputs"])).abs().max().item()
    assert err <= 1e-4


def official_loss(task, image, out, fx):
    if task == "object_discovery":
        return reconstruction_loss(image, out.recon_combined), float(fx["loss_l2"])
    target = torch.from_numpy(fx["target"]).to(image.device)
    return hungarian_huber_loss(out.predictions, target), float(fx["loss_hungarian_huber"])


def check_gradients(task, fx, model):
    """Gradients of the official loss vs the stored TF gradients, with the README tolerances."""
    names = list(fx["grad_names"])
    norms = fx["grad_norms"]
    got_all, ref_all = [], []
    for i, full_name in enumerate(names):
        tf_name = full_name[len(NETWORK_PREFIX) : -len(VALUE_SUFFIX)]
        module, param, kind = _target(model, tf_name)
        key = f"grad__{i:02d}"
        # The GRU bias [2, 3D] becomes two PyTorch tensors (bias_ih, bias_hh).
        params = ["bias_ih", "bias_hh"] if (kind, param) == ("gru", "bias") else [param]
        got_parts = [getattr(module, p).grad.detach().cpu().double().numpy() for p in params]
        ref_parts = _convert(fx[key], kind, param) if key in fx.files else None
        got = np.concatenate([g.ravel() for g in got_parts])
        if ref_parts is None:
            rel = abs(np.linalg.norm(got) - norms[i]) / norms[i]
            assert rel <= 5e-3, f"{tf_name}: gradient norm rel. error {rel}"
            continue
        ref = np.concatenate([r.ravel().astype(np.float64) for _, r in ref_parts])
        err = np.linalg.norm(got - ref)
        if np.linalg.norm(ref) < 1e-6:
            assert err <= 1e-6, f"{tf_name}: abs error {err}"
        else:
            assert err / np.linalg.norm(ref) <= 5e-3, f"{tf_name}: rel error {err}"
        got_all.append(got)
        ref_all.append(ref)
    got_all, ref_all = np.concatenate(got_all), np.concatenate(ref_all)
    total = np.linalg.norm(got_all - ref_all) / np.linalg.norm(ref_all)
    assert total <= 1e-4, f"all gradients: relative norm error {total}"


@pytest.mark.parametrize("task", TASKS)
def test_loss_and_gradients_match_official(task):
    _, fx, model = load(task)
    model.train()
    image, _, out = run_forward(task, fx, model)
    loss, ref = official_loss(task, image, out, fx)
    assert abs(loss.item() - ref) <= 1e-5 * abs(ref)
    assert abs(loss.item() - float(fx["grad_loss"])) <= 1e-5 * abs(float(fx["grad_loss"]))
    loss.backward()
    check_gradients(task, fx, model)


@pytest.mark.gpu
@pytest.mark.parametrize("task", TASKS)
def test_outputs_match_official_on_cuda(task):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    _, fx, model = load(task, device="cuda")
    with torch.no_grad():
        _, _, out = run_forward(task, fx, model, device="cuda")
    keys = ["recon_combined", "recons", "masks", "slots"] if task == "object_discovery" else [
        "predictions", "slots"]
    for key in keys:
        got = getattr(out, key)
        got = nhwc(got) if key in ("recon_combined", "recons", "masks") else got
        err = (got.cpu() - torch.from_numpy(fx[key])).abs().max().item()
        print(f"cuda {task} {key}: max abs error {err:.2e}")
        assert err <= 1e-4, f"{key}: max abs error {err}"
