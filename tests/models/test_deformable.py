"""Deformable ResNets (DCNv2): they start as the plain network, learn offsets, and cost what a hand count says."""

import pytest
import torch
from torch import nn

from zoo_lightning.models import create_model
from zoo_lightning.models.layers import ModulatedDeformConv2d
from zoo_lightning.models.summary import count_mflops
from zoo_lightning.pretrained import load_pretrained

OFFSET_CHANNELS = 27  # a 3x3 kernel: 2 offsets (y, x) and 1 modulation scalar for each of its 9 taps


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _offset_parameters(in_channels: list[int]) -> int:
    """The offset convolutions of 3x3 deformable convs with these input channels: 27 outputs, 3x3, with bias."""
    return sum(OFFSET_CHANNELS * (9 * c + 1) for c in in_channels)


def _deformable_layers(model: nn.Module) -> dict[str, ModulatedDeformConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ModulatedDeformConv2d)}


def _with_random_batchnorm(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model


@pytest.mark.parametrize(
    "plain, deformable, stem, size",
    [
        ("resnet20", "dcn_resnet20", "cifar", 32),  # BasicBlock, option-A shortcuts, both 3x3 convs deformable
        ("resnet20", "dcn_resnet20", "imagenet", 64),
        ("resnet50", "dcn_resnet50", "imagenet", 64),  # Bottleneck: its middle 3x3 conv, stride 2 in the first block
    ],
)
def test_at_initialization_the_deformable_network_computes_the_plain_one(plain, deformable, stem, size):
    torch.manual_seed(0)
    reference = _with_random_batchnorm(create_model(plain, num_classes=7, stem=stem)).eval()
    model = create_model(deformable, num_classes=7, stem=stem).eval()
    result = model.load_state_dict(reference.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(k.endswith((".offset_weight", ".offset_bias")) for k in result.missing_keys)
    assert all(torch.count_nonzero(model.get_parameter(k)) == 0 for k in result.missing_keys)
    x = torch.randn(3, 3, size, size)
    # Equal up to float32 rounding: deform_conv2d sums the products in another order than the plain conv,
    # and ResNet-50's 16 blocks compound that to a few 1e-5 of logits of size 1.
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
        # In training BatchNorm normalizes by the batch: equal too, so the two train identically from here.
        torch.testing.assert_close(model.train()(x), reference.train()(x), rtol=1e-4, atol=1e-4)


def test_offsets_and_modulation_receive_gradients_and_then_move_the_sampling():
    torch.manual_seed(0)
    model = create_model("dcn_resnet20", num_classes=7).train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 7, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    layers = _deformable_layers(model)
    assert len(layers) == 12  # stages 2 and 3, three blocks each, two 3x3 convs per block
    for name, layer in layers.items():
        grad = layer.offset_weight.grad
        assert grad is not None and grad[:18].abs().sum() > 0, f"{name}: no gradient reached the offsets"
        assert grad[18:].abs().sum() > 0, f"{name}: no gradient reached the modulation"
    reference = create_model("resnet20", num_classes=7)
    torch.optim.SGD(model.parameters(), lr=0.1).step()  # offsets now non-zero: no longer the plain grid
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if "offset" not in k})
    with torch.no_grad():
        assert not torch.allclose(model.eval()(x), reference.eval()(x), atol=1e-4)


def test_parameter_count_is_the_plain_one_plus_the_offset_convolutions_counted_by_hand():
    # dcn_resnet20: stages 2 and 3 of (16, 32, 64) channels; the first conv of a stage reads the previous width.
    offsets = _offset_parameters([16] + [32] * 5 + [32] + [64] * 5)
    assert offsets == 27 * (9 * 528 + 12) == 128_628
    assert _count(create_model("dcn_resnet20")) == _count(create_model("resnet20")) + offsets
    # dcn_resnet50: the 3x3 conv of each bottleneck in layer2-layer4 reads its stage's width 128, 256, 512.
    with torch.device("meta"):
        plain, deformable = create_model("resnet50", stem="imagenet"), create_model("dcn_resnet50", stem="imagenet")
    assert _count(deformable) == _count(plain) + _offset_parameters([128] * 4 + [256] * 6 + [512] * 3)


def test_flops_are_the_plain_ones_plus_the_offset_convolutions():
    # The deformable conv counts as the conv it computes; the offset convs add 27 output channels each,
    # at 16x16 in stage 2 and 8x8 in stage 3 (2 FLOPs per multiply-add).
    inputs_times_positions = (16 + 5 * 32) * 16 * 16 + (32 + 5 * 64) * 8 * 8
    extra = 2 * OFFSET_CHANNELS * 9 * inputs_times_positions
    assert count_mflops("dcn_resnet20", "cifar", 32) == pytest.approx(
        count_mflops("resnet20", "cifar", 32) + extra / 1e6, abs=1e-9
    )


def test_deform_stages_is_an_option_of_every_resnet_and_is_checked():
    model = create_model("resnet18", deform_stages=[4])
    assert set(_deformable_layers(model)) == {"layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"}
    assert set(_deformable_layers(create_model("dcn_resnet20", deform_stages=[1]))) == {
        f"layer1.{b}.conv{c}" for b in range(3) for c in (1, 2)
    }  # the caller's option wins over the builder's
    grouped = _deformable_layers(create_model("resnext29_32x4d", deform_stages=[3]))
    assert len(grouped) == 3 and all(m.groups == 32 for m in grouped.values())
    with pytest.raises(ValueError, match=r"deform_stages \[4\] names stages outside 1..3"):
        create_model("resnet20", deform_stages=[4])


def test_plain_resnet_weights_transfer_with_the_offsets_starting_at_zero(tmp_path):
    torch.manual_seed(0)
    plain = _with_random_batchnorm(create_model("resnet20")).eval()
    torch.save(plain.state_dict(), tmp_path / "resnet20.pth")
    model = create_model("dcn_resnet20", num_classes=5).eval()
    said = load_pretrained(model, str(tmp_path / "resnet20.pth"), "dcn_resnet20", ["fc.weight", "fc.bias"])
    assert "Loaded" in said
    state = model.state_dict()
    assert torch.equal(state["layer3.2.conv2.weight"], plain.state_dict()["layer3.2.conv2.weight"])
    assert all(torch.count_nonzero(v) == 0 for k, v in state.items() if "offset" in k)
    with torch.no_grad():  # the same features as the plain network: only the new head differs
        x = torch.randn(2, 3, 32, 32)
        features = lambda m: m.avgpool(m.layer3(m.layer2(m.layer1(m.relu(m.bn1(m.conv1(x)))))))  # noqa: E731
        torch.testing.assert_close(features(model), features(plain), rtol=1e-5, atol=1e-5)
    # Only the offsets may be missing: weights of another network are still refused.
    torch.save(create_model("resnet32").state_dict(), tmp_path / "resnet32.pth")
    with pytest.raises(ValueError, match="not in the network: layer1.3"):
        load_pretrained(
            create_model("dcn_resnet20"), str(tmp_path / "resnet32.pth"), "dcn_resnet20", ["fc.weight", "fc.bias"]
        )
