import math

import pytest
import torch

from slotlab.errors import ConfigError
from slotlab.models import SlotAttentionAutoEncoder, SlotAttentionSetPredictor, build_model
from slotlab.nn import GaussianSlots, SlotAttention, same_padding
from slotlab.train.losses import hungarian_huber_loss, reconstruction_loss


def test_slot_attention_defaults_are_official():
    init = GaussianSlots(7, 64)
    sa = SlotAttention(num_iterations=3, slot_size=64, mlp_hidden_size=128)
    assert sa.project_q.bias is None and sa.project_k.bias is None and sa.project_v.bias is None
    assert sa.norm_inputs.eps == 1e-3 and sa.norm_slots.eps == 1e-3 and sa.norm_mlp.eps == 1e-3
    limit = math.sqrt(6 / 65)
    assert init.slots_mu.abs().max() <= limit and init.slots_mu.abs().max() > 0.2
    assert init.slots_log_sigma.shape == (1, 1, 64)
    assert sa.epsilon == 1e-8 and not sa.implicit_differentiation and sa.attention_bias is None


def test_slot_attention_shapes_override_and_noise():
    init = GaussianSlots(5, 16)
    sa = SlotAttention(num_iterations=2, slot_size=16, mlp_hidden_size=32, input_size=8)
    x = torch.randn(3, 20, 8)
    out = sa(x, init(3))
    assert out.slots.shape == (3, 5, 16) and out.attention.shape == (3, 5, 20)
    assert out.attention_per_iteration is None and out.positions is None
    assert sa(x, init(3, num_slots=9)).slots.shape == (3, 9, 16)
    noise = torch.randn(3, 4, 16)
    a, b = sa(x, init(3, noise=noise)).slots, sa(x, init(3, noise=noise)).slots
    assert a.shape == (3, 4, 16) and torch.equal(a, b)
    with pytest.raises(ValueError, match="noise must have shape"):
        init(3, noise=torch.randn(3, 4, 15))
    assert len(sa(x, init(3), return_all_attention=True).attention_per_iteration) == 2


def test_tf_same_padding():
    assert same_padding(128, 5, 2) == (1, 2)
    assert same_padding(128, 5, 1) == (2, 2)
    assert same_padding(35, 5, 2) == (2, 2)


@pytest.mark.parametrize("task", ["object_discovery", "set_prediction"])
def test_official_configs_forward_backward_every_parameter_gets_gradient(task):
    model = build_model(task)
    image = torch.rand(2, 3, 128, 128) * 2 - 1
    out = model(image)
    if task == "object_discovery":
        assert out.recon_combined.shape == (2, 3, 128, 128)
        assert out.recons.shape == (2, 7, 3, 128, 128)
        assert out.masks.shape == (2, 7, 1, 128, 128)
        assert out.slots.shape == (2, 7, 64) and out.attention.shape == (2, 7, 128 * 128)
        torch.testing.assert_close(out.masks.sum(1), torch.ones(2, 1, 128, 128))
        loss = reconstruction_loss(image, out.recon_combined)
    else:
        assert out.predictions.shape == (2, 10, 19) and out.attention.shape == (2, 10, 1024)
        loss = hungarian_huber_loss(out.predictions, torch.rand(2, 10, 19))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_small_paper_style_models():
    model = SlotAttentionAutoEncoder(
        resolution=(35, 35), num_slots=4, encoder_channels=(32,) * 4,
        decoder_initial_size=(35, 35), decoder_channels=(32,) * 3, decoder_strides=(1,) * 3,
    )
    out = model(torch.rand(2, 3, 35, 35))
    assert out.recon_combined.shape == (2, 3, 35, 35) and out.masks.shape == (2, 4, 1, 35, 35)
    # a strided encoder on an odd size: TF "SAME" gives ceil(35 / 2) = 18 positions per side
    strided = SlotAttentionAutoEncoder(
        resolution=(35, 35), num_slots=3, encoder_channels=(16,) * 4, encoder_strides=(2, 1, 1, 1),
        decoder_initial_size=(35, 35), decoder_channels=(16,) * 3, decoder_strides=(1,) * 3,
    )
    assert strided(torch.rand(1, 3, 35, 35)).attention.shape == (1, 3, 18 * 18)
    m64 = SlotAttentionAutoEncoder(resolution=(64, 64), num_slots=6,
                                   decoder_channels=(64,) * 4, decoder_strides=(2, 2, 2, 1))
    assert m64(torch.rand(1, 3, 64, 64)).recons.shape == (1, 6, 3, 64, 64)
    with pytest.raises(ConfigError, match="does not give the resolution"):
        SlotAttentionAutoEncoder(resolution=(64, 64), decoder_initial_size=(8, 8))
    # by default the broadcast size follows the resolution: 64 / 2**4 = 4
    assert SlotAttentionAutoEncoder(resolution=(64, 64)).decoder_initial_size == (4, 4)
    sp = SlotAttentionSetPredictor(resolution=(64, 64), num_slots=4)
    assert sp(torch.rand(1, 3, 64, 64)).predictions.shape == (1, 4, 19)


@pytest.mark.parametrize(
    "size, kernel, strides",
    [(32, 3, (1, 1, 2, 1)), (33, 5, (2, 1)), (64, 5, (2, 1, 2, 1)), (20, 3, (1, 1))],
)
def test_encoder_cell_centres_are_the_receptive_field_centres(size, kernel, strides):
    """Each feature cell is where the convolutions actually look: the centroid of its receptive
    field (all-ones kernels, a cell away from the border, so no padding cuts it)."""
    from slotlab.models.object_discovery import conv_encoder, encoder_cell_centres
    from slotlab.nn.grid import coordinate_grid

    layers = conv_encoder(1, (1,) * len(strides), kernel, strides)
    for conv in layers:
        torch.nn.init.ones_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
        conv.relu = False  # the linear receptive field (ReLU's gradient at 0 is 0)
    image = torch.zeros(1, 1, size, size, requires_grad=True)
    x = image
    for conv in layers:
        x = conv(x)
    grid = encoder_cell_centres((size, size), kernel, strides)
    h = x.shape[-1]
    pixels = coordinate_grid((size, size)).reshape(size, size, 2)
    i = h // 2
    (grad,) = torch.autograd.grad(x[0, 0, i, i], image)
    weights = grad[0, 0] / grad.sum()
    centroid = (weights[..., None] * pixels).sum(dim=(0, 1))
    torch.testing.assert_close(grid[i * h + i], centroid, atol=1e-5, rtol=0)
    if all(s == 1 for s in strides):
        torch.testing.assert_close(grid, coordinate_grid((size, size)))


def test_invariant_model_grids_agree_with_the_pixel_grid():
    """The invariant model measures slot positions on its encoder cells and draws on the pixel
    grid: a 16x16 map from 32x32 pixels has its cells at pixels 1, 3, ..., 31 (not spread evenly
    over [-1, 1]), and a decoder from 8x8 draws cell i around pixel 4i + 1.5."""
    from slotlab.models.object_discovery import decoder_cell_centres

    model = SlotAttentionAutoEncoder(
        resolution=(32, 32), num_slots=3, slot_size=16, mlp_hidden_size=16,
        encoder_channels=(8, 8, 8, 8), encoder_strides=(1, 1, 2, 1), encoder_kernel_size=3,
        decoder_channels=(8, 8), decoder_strides=(2, 2), decoder_kernel_size=3, invariant=True,
    )
    cols = model.slot_attention.grid.reshape(16, 16, 2)[0, :, 1]
    torch.testing.assert_close(cols * 15.5 + 15.5, torch.arange(1.0, 32.0, 2.0))
    cols = model.decoder_grid.reshape(8, 8, 2)[0, :, 1]
    torch.testing.assert_close(cols * 15.5 + 15.5, torch.arange(8) * 4 + 1.5)
    torch.testing.assert_close(decoder_cell_centres((32, 32), (32, 32)).reshape(32, 32, 2)[0, :, 1],
                               torch.linspace(-1, 1, 32))
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.recon_combined.shape == (2, 3, 32, 32)


def test_cells_to_pixels_puts_each_cell_on_the_pixel_it_is_centred_on():
    """32 pixels after one stride-2 layer: cell i sits on pixel 2i + 1 and gets its value
    exactly there, the pixels between two cells get their mean, pixel 0 (before the first
    centre) the first cell's value; stride 1 is the identity; weights summing to 1 still do."""
    from slotlab.models.object_discovery import cells_to_pixels, encoder_cell_pixels

    rows, cols = encoder_cell_pixels((32, 24), 3, (1, 1, 2, 1))
    torch.testing.assert_close(rows, torch.arange(1.0, 32.0, 2.0, dtype=torch.float64))
    torch.testing.assert_close(cols, torch.arange(1.0, 24.0, 2.0, dtype=torch.float64))
    maps = torch.rand(2, 3, 16, 12).softmax(dim=1)
    out = cells_to_pixels(maps, (rows, cols), (32, 24))
    assert out.shape == (2, 3, 32, 24)
    torch.testing.assert_close(out[..., 1::2, 1::2], maps)
    torch.testing.assert_close(out[..., 4, 7], (maps[..., 1, 3] + maps[..., 2, 3]) / 2)
    torch.testing.assert_close(out[..., 0, 0], maps[..., 0, 0])
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 32, 24))
    same = encoder_cell_pixels((6, 5), 5, (1, 1))
    grid = torch.rand(6, 5)
    torch.testing.assert_close(cells_to_pixels(grid, same, (6, 5)), grid)


def test_set_predictor_test_iterations_run_in_eval_mode_and_survive_saving(tmp_path):
    """`test_iterations` T' on the set predictor: T' iterations in eval mode, T in training, a
    call's `num_iterations` overrides both, and a saved model comes back with them."""
    from slotlab.models.pretrained import load_pretrained, save_pretrained

    torch.manual_seed(0)
    model = SlotAttentionSetPredictor(resolution=(32, 32), num_slots=3, encoder_channels=(8,) * 4,
                                      slot_init="learned", test_iterations=6)
    image = torch.rand(2, 3, 32, 32)
    assert len(model(image, return_all_attention=True).attention_per_iteration) == 3
    model.eval()
    out = model(image, return_all_attention=True)
    assert len(out.attention_per_iteration) == 6
    torch.testing.assert_close(out.predictions, model(image, num_iterations=6).predictions)
    assert not torch.allclose(out.predictions, model(image, num_iterations=3).predictions)
    loaded = load_pretrained(save_pretrained(model, tmp_path / "m")).eval()
    assert loaded.slot_attention.test_iterations == 6
    torch.testing.assert_close(loaded(image).predictions, out.predictions)
    assert SlotAttentionSetPredictor(resolution=(32, 32)).config.test_iterations is None
