import itertools
import math

import pytest
import torch

from slotlab.errors import ConfigError
from slotlab.train.config import make_config
from slotlab.train.losses import (
    hungarian_bce_loss,
    hungarian_huber_loss,
    mask_entropy,
    mixture_nll,
    pairwise_bce_cost,
    pairwise_huber_cost,
    reconstruction_loss,
)


def brute_force(pred, target):
    total = 0.0
    for b in range(pred.shape[0]):
        cost = pairwise_huber_cost(pred[b : b + 1], target[b : b + 1])[0]
        k = cost.shape[0]
        total += min(sum(cost[i, p[i]].item() for i in range(k))
                     for p in itertools.permutations(range(k)))
    return total / pred.shape[0]


def test_hungarian_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    for k in range(1, 6):
        pred = torch.rand(3, k, 19, generator=g) * 3 - 1  # some |diff| > 1: both Huber branches
        target = torch.rand(3, k, 19, generator=g)
        got = hungarian_huber_loss(pred, target).item()
        assert abs(got - brute_force(pred, target)) < 1e-5


def test_huber_cost_definition():
    pred = torch.tensor([[[0.0, 3.0]]])
    target = torch.tensor([[[0.5, 0.0]]])
    # 0.5 * 0.5^2 = 0.125 and |3| - 0.5 = 2.5, mean over dims
    assert torch.allclose(pairwise_huber_cost(pred, target), torch.tensor([[[1.3125]]]))


def test_hungarian_loss_gradient_flows_and_permutation_invariant():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 4, 19, generator=g, requires_grad=True)
    target = torch.rand(2, 4, 19, generator=g)
    loss = hungarian_huber_loss(pred, target)
    loss.backward()
    assert pred.grad.abs().sum() > 0
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(hungarian_huber_loss(pred[:, perm], target), loss)


def test_reconstruction_loss_is_mean_squared_error():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    assert reconstruction_loss(a, b).item() == 0.25


def test_mixture_nll_is_scaled_mse_where_one_slot_owns_every_pixel():
    torch.manual_seed(0)
    image, recons = torch.rand(2, 3, 4, 5) * 2 - 1, torch.randn(2, 4, 3, 4, 5)
    logits = torch.full((2, 4, 1, 4, 5), -1e4)
    logits[:, 2] = 0.0
    want = reconstruction_loss(image, recons[:, 2]) / (2 * 0.3**2)
    torch.testing.assert_close(mixture_nll(image, recons, logits, 0.3), want)


def test_mixture_nll_by_hand_and_its_mask_gradient_is_mask_minus_posterior():
    torch.manual_seed(1)
    b, k, c, h, w, sigma = 2, 3, 3, 2, 3, 0.5
    image, recons = torch.rand(b, c, h, w), torch.rand(b, k, c, h, w)
    logits = torch.randn(b, k, 1, h, w, requires_grad=True)
    loss = mixture_nll(image, recons, logits, sigma)
    masks = logits.softmax(dim=1)
    gauss = torch.exp(-((image[:, None] - recons) ** 2).sum(2, keepdim=True) / (2 * sigma**2))
    joint = masks * gauss  # [B, K, 1, H, W]
    torch.testing.assert_close(loss, -joint.sum(1).log().mean() / c)
    loss.backward()
    posterior = joint / joint.sum(1, keepdim=True)
    # d/dlogit_k of -log sum_j m_j g_j is m_k - r_k (per pixel; the loss averages B*H*W*C)
    torch.testing.assert_close(logits.grad, ((masks - posterior) / (b * h * w * c)).detach())


def test_mixture_pushes_a_small_mask_where_the_mse_barely_does():
    # slot 0 has the pixel's colour but a mask of 1%: the MSE gradient on its logit carries the
    # softmax factor m (1 - m); the mixture's is (m - posterior) / C, about -1 / 3.
    image = torch.zeros(1, 3, 1, 1)
    recons = torch.stack([torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)], dim=1)
    logits = torch.tensor([[0.0], [4.6]]).reshape(1, 2, 1, 1, 1).requires_grad_()
    mixture_nll(image, recons, logits, 0.2).backward()
    mix = logits.grad[0, 0].item()
    logits.grad = None
    combined = (recons * logits.softmax(dim=1)).sum(dim=1)
    reconstruction_loss(image, combined).backward()
    mse = logits.grad[0, 0].item()
    assert mix * 3 < -0.9 and -0.03 < mse < 0


def test_mixture_sigma_is_checked():
    assert make_config(mixture_sigma=0.2).mixture_sigma == 0.2
    with pytest.raises(ConfigError, match="must be > 0"):
        make_config(mixture_sigma=0.0)
    with pytest.raises(ConfigError, match="object discovery only"):
        make_config(task="set_prediction", mixture_sigma=0.2)


def test_mask_entropy_by_hand_and_it_breaks_a_near_tie():
    # pixel 0: one slot owns it (entropy 0); pixel 1: two of four slots share it equally (log 2)
    logits = torch.tensor([[[100.0, 0.0]], [[0.0, 0.0]], [[0.0, -100.0]], [[0.0, -100.0]]])
    logits = logits.reshape(1, 4, 1, 1, 2)
    torch.testing.assert_close(mask_entropy(logits), torch.tensor(math.log(2) / 2))
    # uniform over K slots: log K, the maximum
    torch.testing.assert_close(mask_entropy(torch.zeros(2, 5, 1, 3, 3)), torch.tensor(math.log(5)))
    # two slots hold an object at 0.51 / 0.49: descending the penalty moves weight to the larger
    logits = torch.tensor([0.04, 0.0]).reshape(1, 2, 1, 1, 1).requires_grad_()
    mask_entropy(logits).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]


def test_mask_entropy_is_checked_and_trains(tmp_path, monkeypatch):
    assert make_config(mask_entropy=0.005).mask_entropy == 0.005
    with pytest.raises(ConfigError, match="must be >= 0"):
        make_config(mask_entropy=-1.0)
    with pytest.raises(ConfigError, match="object discovery only"):
        make_config(task="set_prediction", mask_entropy=0.005)
    from slotlab.cli import main
    from slotlab.train import loop
    from tests.train.helpers import TINY_ARGS, write_folder, write_preset

    seen = []
    real = loop.mask_entropy

    def spy(mask_logits):
        value = real(mask_logits)
        seen.append(value.item())
        return value

    monkeypatch.setattr(loop, "mask_entropy", spy)
    data, preset = write_folder(tmp_path / "data"), write_preset(tmp_path / "tiny.yaml")
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out",
                 str(tmp_path / "run"), "--preset", str(preset), *TINY_ARGS,
                 "--mask-entropy", "0.01"]) == 0
    assert len(seen) == 6 and all(0 < v <= math.log(4) + 1e-5 for v in seen)


def test_bce_cost_by_hand_and_its_matching():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 19, generator=g) * 3
    target = (torch.rand(2, 3, 19, generator=g) > 0.5).float()
    target[..., :3] = torch.rand(2, 3, 3, generator=g)
    cost = pairwise_bce_cost(logits, target)
    assert cost.shape == (2, 3, 4)
    for b, i, j in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        x, t = logits[b, j], target[b, i]
        huber = (0.5 * (torch.sigmoid(x[:3]) - t[:3]) ** 2).sum()  # |diff| < 1: quadratic
        bce = torch.nn.functional.binary_cross_entropy_with_logits(x[3:], t[3:], reduction="sum")
        torch.testing.assert_close(cost[b, i, j], (huber + bce) / 19)
    # the loss is the optimal assignment's cost: no permutation of the slots does better
    loss = hungarian_bce_loss(logits, target)
    best = sum(min(sum(cost[b, i, p[i]] for i in range(3))
                   for p in itertools.permutations(range(4))) for b in range(2)) / 2
    torch.testing.assert_close(loss, best)
    torch.testing.assert_close(hungarian_bce_loss(logits[:, [3, 1, 0, 2]], target), loss)


def test_bce_pushes_a_confident_wrong_class_where_huber_barely_does():
    # one slot, one object; the colour output of the true colour is confidently off (logit -6)
    target = torch.zeros(1, 1, 19)
    target[0, 0, [0, 1, 2]] = 0.5
    target[0, 0, 3 + 2 + 2 + 3 + 4] = 1.0  # colour 4
    target[0, 0, 18] = 1.0  # a real object
    logits = torch.zeros(1, 1, 19)
    logits[0, 0, 14] = -6.0
    logits.requires_grad_(True)
    hungarian_bce_loss(logits, target).backward()
    p = torch.sigmoid(torch.tensor(-6.0))
    torch.testing.assert_close(logits.grad[0, 0, 14], (p - 1) / 19)  # BCE: (p - t) / 19
    bce_grad = logits.grad[0, 0, 14].item()
    logits.grad = None
    hungarian_huber_loss(torch.sigmoid(logits), target).backward()
    huber_grad = logits.grad[0, 0, 14].item()  # (p - t) p (1 - p) / 19
    assert abs(bce_grad) > 300 * abs(huber_grad) > 0


def test_set_loss_is_checked_and_trains(tmp_path, monkeypatch):
    assert make_config(task="set_prediction", set_loss="bce").set_loss == "bce"
    with pytest.raises(ConfigError, match="'huber' \\(official\\) or 'bce'"):
        make_config(task="set_prediction", set_loss="ce")
    with pytest.raises(ConfigError, match="set prediction only"):
        make_config(set_loss="bce")
    from slotlab.cli import main
    from slotlab.models.set_prediction import SlotAttentionSetPredictor
    from slotlab.train import loop
    from tests.train.helpers import TINY_ARGS, TINY_MODEL, write_preset

    model = SlotAttentionSetPredictor(resolution=(32, 32), num_slots=3, slot_size=16,
                                      mlp_hidden_size=16, encoder_channels=(8, 8, 8, 8))
    out = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    torch.testing.assert_close(out.predictions, torch.sigmoid(out.logits))
    assert out.predictions.shape == out.logits.shape == (2, 3, 19)

    seen = []
    real = loop.hungarian_bce_loss

    def spy(logits, target):
        value = real(logits, target)
        seen.append(value.item())
        return value

    monkeypatch.setattr(loop, "hungarian_bce_loss", spy)
    sp_model = {k: v for k, v in TINY_MODEL.items() if not k.startswith("decoder")}
    preset = write_preset(tmp_path / "sp.yaml", task="set_prediction", model=sp_model)
    assert main(["train", "set-prediction", "--data", "procedural", "--out",
                 str(tmp_path / "run"), "--preset", str(preset), *TINY_ARGS,
                 "--set-loss", "bce"]) == 0
    assert len(seen) == 6 and all(math.isfinite(v) and v > 0 for v in seen)
