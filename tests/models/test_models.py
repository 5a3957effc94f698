"""Registry-driven model tests: every registered backbone builds, runs and trains one step."""

import pytest
import torch
import torchvision

from zoo_lightning.models import create_model, list_models
from zoo_lightning.models.googlenet import GoogLeNetOutputs

# The largest models cost about a second each even on one thread (tests/models/conftest.py):
# `make test-real` runs them.
# torchvision's deformable convolution has a slow CPU kernel (its backward above all): the DCN models beyond
# dcn_resnet20 cost several seconds each here.
SLOW = {
    "resnet101",
    "resnet152",
    "densenet161",
    "densenet201",
    "wrn28_10",
    "wide_resnet50_2",
    "dcn_resnet18",
    "dcn_resnet50",
    "dcn_resnet56",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
}


def _marked(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _check_trains(model: torch.nn.Module, size: int, num_classes: int = 7) -> None:
    model.train()
    outputs = model(torch.randn(2, 3, size, size))
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    loss = sum(o.square().mean() for o in (outputs if isinstance(outputs, tuple) else [outputs]))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]}"


@pytest.mark.parametrize("name", _marked(list_models()))
def test_cifar_stem_at_32x32(name):
    torch.manual_seed(0)
    _check_trains(create_model(name, num_classes=7, stem="cifar"), 32)


@pytest.mark.parametrize(
    "name", _marked(["cnn", "resnet18", "googlenet", "densenet_bc100", "mobilenet_v2", "alexnet", "vgg11_bn"])
)
def test_stl10_size_with_both_stems(name):
    torch.manual_seed(0)
    for stem in ("cifar", "imagenet"):
        model = create_model(name, num_classes=7, stem=stem).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 96, 96)).shape == (1, 7)


@pytest.mark.parametrize("name", _marked(list_models()))
def test_every_model_takes_stl10_size_with_both_stems_on_meta(name):
    # The meta device checks every shape without computing anything: cheap enough for the whole zoo.
    for stem in ("cifar", "imagenet"):
        with torch.device("meta"):
            model = create_model(name, num_classes=7, stem=stem).eval()
            assert model(torch.empty(2, 3, 96, 96)).shape == (2, 7)


@pytest.mark.parametrize(
    "name", _marked(["resnet20", "efficientnet_b0", "seresnet18", "wrn16_8", "preact_resnet18", "dcn_resnet20"])
)
def test_imagenet_stem_trains_at_96(name):
    _check_trains(create_model(name, num_classes=7, stem="imagenet"), 96)


TORCHVISION_TWINS = {
    "alexnet": {},
    "vgg11": {},
    "vgg11_bn": {},
    "vgg13": {},
    "vgg13_bn": {},
    "vgg16": {},
    "vgg16_bn": {},
    "vgg19": {},
    "vgg19_bn": {},
    "googlenet": {"aux_logits": True, "init_weights": True},
    "resnet18": {},
    "resnet34": {},
    "resnet50": {},
    "resnet101": {},
    "resnet152": {},
    "resnext50_32x4d": {},
    "wide_resnet50_2": {},
    "densenet121": {},
    "densenet161": {},
    "densenet169": {},
    "densenet201": {},
    "mobilenet_v2": {},
    **{f"efficientnet_b{b}": {} for b in range(8)},
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_TWINS))
def test_parameter_count_equals_torchvisions(name):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ours = create_model(name, num_classes=1000, stem="imagenet")
        theirs = torchvision.models.get_model(name, weights=None, **TORCHVISION_TWINS[name])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(theirs)


def test_googlenet_aux_outputs_in_training_only():
    model = create_model("googlenet", num_classes=7)
    x = torch.randn(2, 3, 16, 16)  # the CIFAR variant at half size: same heads, a quarter of the work
    out = model.train()(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert out.logits.shape == out.aux_logits1.shape == out.aux_logits2.shape == (2, 7)
    with torch.no_grad():
        assert isinstance(model.eval()(x), torch.Tensor)
    plain = create_model("googlenet", num_classes=7, aux_logits=False)
    assert isinstance(plain.train()(x), torch.Tensor)
    assert plain.aux1 is None and plain.aux2 is None


def test_published_parameter_counts_of_cifar_models():
    count = lambda n: sum(p.numel() for p in create_model(n).parameters())  # noqa: E731
    assert round(count("resnet20") / 1e6, 2) == 0.27  # He et al. Table 6
    assert round(count("resnet110") / 1e6, 1) == 1.7
    assert round(count("wrn28_10") / 1e6, 1) == 36.5  # Zagoruyko & Komodakis Table 4
    assert round(count("densenet_bc100") / 1e6, 1) == 0.8  # Huang et al. Table 2


def test_se_is_a_block_option_not_a_copy():
    plain, se = create_model("resnet18"), create_model("seresnet18")
    assert type(plain) is type(se)
    assert sum(p.numel() for p in se.parameters()) > sum(p.numel() for p in plain.parameters())
    assert set(n for n, _ in plain.named_parameters()) < set(n for n, _ in se.named_parameters())


def test_plain_cnn_parameters_equal_a_hand_count():
    convs = [(3, 32), (32, 64), (64, 128), (128, 256)]  # 3x3 conv weights plus BatchNorm's weight and bias
    expected = sum(9 * i * o + 2 * o for i, o in convs) + 256 * 10 + 10
    assert sum(p.numel() for p in create_model("cnn").parameters()) == expected
    assert 0.3e6 < expected < 1e6


def test_preact_imagenet_stem_normalizes_before_pooling():
    model = create_model("preact_resnet18", stem="imagenet")
    assert [type(m) for m in model.maxpool] == [torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.MaxPool2d]
    assert isinstance(create_model("preact_resnet18").maxpool, torch.nn.Identity)
