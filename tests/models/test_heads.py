"""The head rule, over the whole registry: what depends on num_classes is the head, and nothing else is.

Freezing, pretrained loading and discriminative learning rates all split a backbone by this one rule.
"""

import pytest
import torch
from torch import nn

from zoo_lightning.models import create_model, list_models
from zoo_lightning.models.registry import head_parameter_names


def _last_linear(model: nn.Module) -> str:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("name", list_models())
def test_the_head_is_the_class_outputs_and_nothing_else(name, stem):
    head = head_parameter_names(name, 7, stem)
    with torch.device("meta"):
        model = create_model(name, num_classes=7, stem=stem)
    modules = dict(model.named_modules())
    parameters = dict(model.named_parameters())
    assert head, "no head found"
    assert f"{_last_linear(model)}.weight" in head  # the final classifier, whatever the family calls it
    for key in head:
        module = modules[key.rpartition(".")[0]]
        assert isinstance(module, nn.Linear) and module.out_features == 7, key
        assert parameters[key].shape[0] == 7
    # Every other Linear layer (VGG's and AlexNet's hidden ones, GoogLeNet's aux fc1) is backbone.
    others = [n for n, m in modules.items() if isinstance(m, nn.Linear) and f"{n}.weight" not in head]
    assert all(modules[n].out_features != 7 for n in others)


def test_googlenet_auxiliary_classifiers_are_head_too():
    assert head_parameter_names("googlenet", 10) == [
        "aux1.fc2.weight",
        "aux1.fc2.bias",
        "aux2.fc2.weight",
        "aux2.fc2.bias",
        "fc.weight",
        "fc.bias",
    ]
    assert head_parameter_names("googlenet", 10, aux_logits=False) == ["fc.weight", "fc.bias"]


def test_library_models_follow_the_same_rule():
    assert head_parameter_names("torchvision:resnet18", 5) == ["fc.weight", "fc.bias"]
    assert head_parameter_names("torchvision:convnext_tiny", 5) == ["classifier.2.weight", "classifier.2.bias"]
    # A convolutional classifier is found as well: SqueezeNet's last 1x1 conv.
    assert head_parameter_names("torchvision:squeezenet1_0", 5) == ["classifier.1.weight", "classifier.1.bias"]


def test_resnext29_takes_other_groups_and_widths():
    model = create_model("resnext29_32x4d", groups=8, width_per_group=64)
    assert model.layer1[0].conv2.groups == 8 and model.layer1[0].conv2.out_channels == 8 * 64
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet20", "resnext29_32x4d", "seresnet18", "wrn16_8", "preact_resnet18"]
)
def test_resnet_families_take_stochastic_depth_and_dropout(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, drop_path=0.5, dropout=0.3)
    rates = [m.drop_path for m in model.modules() if hasattr(m, "drop_path") and isinstance(m.drop_path, float)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))  # no noise in evaluation
        model.train()
        assert not torch.allclose(model(x), model(x))  # dropped paths and units differ between passes
    with pytest.raises(ValueError, match="drop_path must be in"):
        create_model(name, drop_path=1.0)
