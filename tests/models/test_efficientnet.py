"""EfficientNet's compound scaling: width, depth and resolution are options, B0-B7 are B0 scaled by them."""

import math

import pytest
import torch
import torchvision
from torch import nn

from zoo_lightning.models import create_model
from zoo_lightning.models.efficientnet import EfficientNet, MBConv

# (width_mult, depth_mult, dropout) as the paper's Table 1 row and torchvision's builders give them.
PUBLISHED = {
    0: (1.0, 1.0, 0.2),
    1: (1.0, 1.1, 0.2),
    2: (1.1, 1.2, 0.3),
    3: (1.2, 1.4, 0.3),
    4: (1.4, 1.8, 0.4),
    5: (1.6, 2.2, 0.4),
    6: (1.8, 2.6, 0.5),
    7: (2.0, 3.1, 0.5),
}
B0_REPEATS = [1, 2, 2, 3, 3, 4, 1]


def _blocks_per_stage(model: EfficientNet) -> list[int]:
    return [sum(isinstance(m, MBConv) for m in stage) for stage in model.features[1:-1]]


@pytest.mark.parametrize("b", sorted(PUBLISHED))
def test_each_named_builder_is_b0_scaled_by_its_published_multipliers(b):
    width, depth, dropout = PUBLISHED[b]
    with torch.device("meta"):
        model = create_model(f"efficientnet_b{b}", num_classes=1000, stem="imagenet")
        theirs = torchvision.models.get_model(f"efficientnet_b{b}", weights=None)
    assert _blocks_per_stage(model) == [math.ceil(r * depth) for r in B0_REPEATS]
    assert model.features[0][0].out_channels == theirs.features[0][0].out_channels  # 32 * width, to a multiple of 8
    assert model.classifier[0].p == dropout
    eps = {(m.eps, m.momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert eps == {(m.eps, m.momentum) for m in theirs.modules() if isinstance(m, nn.BatchNorm2d)}


def test_multipliers_are_options_of_any_builder():
    model = create_model("efficientnet_b0", width_mult=1.25, depth_mult=2.0)
    assert _blocks_per_stage(model) == [2 * r for r in B0_REPEATS]
    assert model.features[0][0].out_channels == 40 and model.classifier[1].in_features == 4 * 400
    assert create_model("efficientnet_b3", dropout=0.1).classifier[0].p == 0.1  # the caller's kwargs win
    with pytest.raises(ValueError, match="width_mult and depth_mult must be > 0"):
        create_model("efficientnet_b0", depth_mult=0)


def test_resolution_resizes_the_input_inside_the_network():
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", num_classes=5, resolution=48).eval()
    seen = []
    model.features.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        model.resolution = None
        by_hand = model(nn.functional.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False))
    assert seen == [(2, 3, 48, 48), (2, 3, 48, 48)]
    torch.testing.assert_close(out, by_hand)
    with pytest.raises(ValueError, match="resolution must be >= 8"):
        create_model("efficientnet_b0", resolution=4)
