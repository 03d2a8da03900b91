import itertools

import torch

from slotlab.train.losses import (
    hungarian_huber_loss,
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
