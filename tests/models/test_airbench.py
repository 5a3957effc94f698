"""airbench94 / 95 / 96: the parameter count and FLOPs by hand, the initialization, the frozen BatchNorm scale."""

from __future__ import annotations

import torch
from torch import nn

from zoo_lightning.models import create_model
from zoo_lightning.models.airbench import FrozenScaleBatchNorm
from zoo_lightning.models.summary import count_mflops, count_parameters


def _hand_count(widths=(64, 256, 256), residual=False, classes=10) -> tuple[int, int]:
    """(parameters, forward FLOPs at 32x32) of the airbench layout, conv and linear MACs x 2."""
    params = 3 * 24 * 2 * 2 + 24  # the 2x2 patch conv and its bias
    flops = 2 * 3 * 2 * 2 * 24 * 31 * 31
    side, c_in = 31, 24
    for c in widths:
        convs = 3 if residual else 2
        params += c_in * c * 9 + (convs - 1) * c * c * 9 + convs * 2 * c  # convs, and BN weight + bias each
        flops += 2 * c_in * c * 9 * side * side  # the first conv runs before the pool
        side //= 2
        flops += (convs - 1) * 2 * c * c * 9 * side * side
        c_in = c
    params += widths[-1] * classes
    flops += 2 * widths[-1] * classes
    return params, flops


def test_parameters_and_flops_are_the_hand_counts():
    params, flops = _hand_count()
    assert count_parameters(create_model("airbench94")) == params == 1_972_792
    assert count_mflops("airbench94", "cifar", 32) * 1e6 == flops
    params, flops = _hand_count((128, 384, 384))
    assert count_parameters(create_model("airbench95")) == params
    assert count_mflops("airbench95", "cifar", 32) * 1e6 == flops
    params, flops = _hand_count((128, 512, 512), residual=True)
    assert count_parameters(create_model("airbench96")) == params
    assert count_mflops("airbench96", "cifar", 32) * 1e6 == flops


def test_batchnorm_keeps_a_frozen_scale_of_one_and_fast_statistics():
    model = create_model("airbench94")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6 and all(isinstance(m, FrozenScaleBatchNorm) for m in norms)
    for norm in norms:
        assert not norm.weight.requires_grad and torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert norm.bias.requires_grad and norm.momentum == 0.4 and norm.eps == 1e-12


def test_convs_start_as_the_identity_on_their_first_channels():
    model = create_model("airbench94")
    conv = model.layers[1].conv1  # 64 -> 256
    x = torch.randn(1, 64, 5, 5)
    torch.testing.assert_close(conv(x)[:, :64], x)
    assert conv.bias is None and model.fc.bias is None


def test_logits_are_scaled_by_one_ninth_and_any_input_size_works():
    model = create_model("airbench94", num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    features = torch.flatten(model.pool(model.layers(model.act(model.whiten(x)))), 1)
    torch.testing.assert_close(model(x), model.fc(features) / 9)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
