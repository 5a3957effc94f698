"""Pretrained weights: torchvision's state dicts load into our families with identical outputs, from torch's
hub cache without network, all but the head; a mismatch is one line that lists the keys.

Nothing is downloaded: the "torchvision weights" here are torchvision models with random weights (and
randomized BatchNorm statistics, so that every BatchNorm setting shows in the outputs).
"""

import pytest
import torch
import torchvision
from torch import nn

from tests.helpers import option_error
from zoo_lightning.checkpoints import rebuild_backbone
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.models import create_model
from zoo_lightning.models.weights import build_options, torchvision_cache_file, torchvision_weights
from zoo_lightning.options import pretrained_kind
from zoo_lightning.pretrained import current_spelling, expected_normalization, head_modules, load_pretrained

# One or two of each family; the rest of torchvision's twins (same code, more layers) under `make test-real`.
FAST = [
    "alexnet",
    "vgg11",
    "vgg11_bn",
    "googlenet",
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "densenet121",
    "mobilenet_v2",
    "efficientnet_b0",
]
SLOW = [
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "resnet34",
    "resnet101",
    "wide_resnet50_2",
    "densenet161",
    "densenet169",
    "efficientnet_b1",
    "efficientnet_b5",
]  # b5: BatchNorm's eps 1e-3 and momentum 0.01, as torchvision's
TORCHVISION_OPTIONS = {"googlenet": {"aux_logits": True, "init_weights": True}}


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so that the outputs depend on every BatchNorm setting
    (an eps of 1e-3 instead of 1e-5 moves EfficientNet-B0's logits by 1e-3 of their size)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model


def _torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    options = {**TORCHVISION_OPTIONS.get(name, {}), **build_options("torchvision", name)}
    return _randomized(torchvision.models.get_model(name, weights=None, **options)).eval()


@pytest.mark.parametrize("name", FAST + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW])
def test_a_torchvision_state_dict_loads_strictly_with_identical_outputs(name):
    theirs = _torchvision_model(name)
    ours = create_model(name, num_classes=1000, stem="imagenet", **build_options("torchvision", name)).eval()
    ours.load_state_dict(theirs.state_dict())  # strict: every key, every shape
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


def test_googlenet_takes_torchvisions_names_and_input_transform():
    keys = set(create_model("googlenet", 1000, "imagenet").state_dict())
    assert {"conv1.conv.weight", "conv2.conv.weight", "conv3.conv.weight"} <= keys and not any(
        "stem" in k for k in keys
    )
    assert "stem.conv.weight" in create_model("googlenet").state_dict()  # the CIFAR stem keeps its name
    # Checkpoints from when the ImageNet stem was a Sequential named `stem` still load.
    state = create_model("googlenet", 10, "imagenet").state_dict()
    renamed = {k.replace("conv1.", "stem.0.", 1) if k.startswith("conv1.") else k: v for k, v in state.items()}
    create_model("googlenet", 10, "imagenet").load_state_dict(renamed)
    # The weights' option reaches the network, also when a checkpoint's hyper-parameters rebuild it.
    assert rebuild_backbone({"backbone": "googlenet", "stem": "imagenet", "pretrained": "torchvision"}).transform_input
    assert not rebuild_backbone({"backbone": "googlenet", "stem": "imagenet"}).transform_input


def _in_hub_cache(tmp_path, monkeypatch, name: str, state: dict) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    file = torchvision_cache_file(torchvision_weights(name))
    assert file.parent == tmp_path / "torch" / "hub" / "checkpoints"
    file.parent.mkdir(parents=True)
    torch.save(state, file)


def test_torchvision_weights_are_read_from_the_hub_cache_with_no_network(tmp_path, monkeypatch):
    theirs = _torchvision_model("resnet18")
    _in_hub_cache(tmp_path, monkeypatch, "resnet18", theirs.state_dict())
    model = ImageClassifier("resnet18", num_classes=5, stem="imagenet", pretrained="torchvision")
    fresh_head = model.backbone.fc.weight.detach().clone()
    model.load_pretrained()
    loaded, source = model.backbone.state_dict(), theirs.state_dict()
    assert all(torch.equal(loaded[k], source[k]) for k in source if not k.startswith("fc."))
    assert model.backbone.fc.weight.shape == (5, 512) and torch.equal(model.backbone.fc.weight, fresh_head)
    assert model.expected_normalization["mean"] == [0.485, 0.456, 0.406]
    assert "ResNet18_Weights.IMAGENET1K_V1" in model.expected_normalization["source"]


def test_without_the_file_and_network_the_error_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = ImageClassifier("resnet18", num_classes=5, stem="imagenet", pretrained="torchvision")
    with pytest.raises(FileNotFoundError) as error:
        model.load_pretrained()
    message = str(error.value)
    assert "Cannot download torchvision's ResNet18_Weights.IMAGENET1K_V1" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "\n" not in message


def test_densenet_files_with_the_old_layer_names_load(tmp_path, monkeypatch):
    state = _torchvision_model("densenet121").state_dict()
    legacy = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in state.items()}
    assert legacy.keys() != state.keys()
    _in_hub_cache(tmp_path, monkeypatch, "densenet121", legacy)
    model = create_model("densenet121", num_classes=3, stem="imagenet")
    load_pretrained(model, "torchvision", "densenet121", ["classifier.weight", "classifier.bias"])
    assert torch.equal(
        model.features.denseblock1.denselayer1.norm1.running_var,
        state["features.denseblock1.denselayer1.norm1.running_var"],
    )


def test_googlenet_without_aux_heads_skips_the_files_untrained_ones(tmp_path, monkeypatch):
    _in_hub_cache(tmp_path, monkeypatch, "googlenet", _torchvision_model("googlenet").state_dict())
    plain = ImageClassifier(
        "googlenet", num_classes=4, stem="imagenet", backbone_kwargs={"aux_logits": False}, pretrained="torchvision"
    )
    plain.load_pretrained()
    assert plain.backbone.transform_input and plain.backbone.aux1 is None


def test_a_state_dict_of_another_network_is_refused_in_one_line_listing_the_keys(tmp_path):
    torch.save(create_model("resnet34", stem="imagenet").state_dict(), tmp_path / "resnet34.pth")
    model = create_model("resnet18", stem="imagenet")
    with pytest.raises(ValueError) as error:
        load_pretrained(model, str(tmp_path / "resnet34.pth"), "resnet18", ["fc.weight", "fc.bias"])
    message = str(error.value)
    assert "do not fit resnet18" in message and "not in the network: layer1.2.conv1.weight" in message
    assert "more)" in message and "\n" not in message
    cifar = create_model("resnet18", stem="cifar")
    with pytest.raises(ValueError, match=r"other shape: conv1.weight \(64, 3, 7, 7\) vs the network's \(64, 3, 3, 3\)"):
        load_pretrained(cifar, str(tmp_path / "resnet34.pth"), "resnet18", ["fc.weight", "fc.bias"])


def test_our_checkpoints_and_plain_state_dicts_are_pretrained_weights(trained_cnn, tmp_path):
    _, checkpoint = trained_cnn
    model = ImageClassifier("cnn", num_classes=3, pretrained=str(checkpoint))
    model.load_pretrained()
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert torch.equal(model.backbone.stem[0].weight, saved["backbone.stem.0.weight"])
    assert model.backbone.classifier[2].weight.shape == (3, 256)  # new head for 3 classes, not the 10 it had
    normalization = model.expected_normalization  # the data statistics the checkpoint was trained with
    assert normalization["source"].startswith("the checkpoint") and len(normalization["mean"]) == 3
    # DDP's `module.` prefix, and other training code's {"state_dict": ...}, are read too.
    weights = {f"module.{k}": v for k, v in create_model("cnn").state_dict().items()}
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "other.pt")
    load_pretrained(
        create_model("cnn"), str(tmp_path / "other.pt"), "cnn", ["classifier.2.weight", "classifier.2.bias"]
    )
    assert expected_normalization(str(tmp_path / "other.pt"), "cnn") is None
    assert expected_normalization(str(tmp_path / "gone.ckpt"), "cnn") is None  # evaluation elsewhere: not an error


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"backbone": "resnet18", "pretrained": "torchvision"}, "add --model.stem imagenet"),
        (
            {"backbone": "resnet20", "stem": "imagenet", "pretrained": "torchvision"},
            "torchvision has no pretrained weights",
        ),
        ({"backbone": "resnet18", "pretrained": "timm:a1_in1k"}, "is timm's weights, for timm: backbones"),
        ({"backbone": "timm:resnet18", "pretrained": "torchvision"}, "give --model.pretrained timm:TAG"),
        ({"backbone": "cnn", "unfreeze_at_epoch": 3}, "needs --model.freeze_backbone true"),
    ],
)
def test_transfer_options_wrong_together_are_checked_before_any_work(kwargs, says):
    with pytest.raises(ValueError, match=says) as error:
        ImageClassifier(num_classes=5, **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--model.backbone_lr_scale", "0"], "'0' is not > 0"),
        (["--model.freeze_backbone", "true", "--model.unfreeze_at_epoch", "0"], "'0' is not >= 1"),
        (["--model.stem", "tiny"], "tiny"),
    ],
)
def test_transfer_options_out_of_range_are_refused_by_the_parser(argv, says):
    message = option_error(ImageClassifier, *argv)
    assert says in message and f"model.{argv[-2].rpartition('.')[2]}" in message


@pytest.mark.parametrize(
    "value, kind",
    [
        ("torchvision", ("torchvision", "")),
        ("timm", ("timm", "")),
        ("timm:a1_in1k", ("timm", "a1_in1k")),
        ("runs/best.ckpt", ("file", "runs/best.ckpt")),
        ("/abs/weights.pth", ("file", "/abs/weights.pth")),
        ("model.pt", ("file", "model.pt")),
        ("model_best.pth.tar", ("file", "model_best.pth.tar")),
    ],
)
def test_each_kind_of_pretrained_weights_is_spelled_out_and_parses_to_a_plain_string(value, kind):
    from jsonargparse import ArgumentParser

    assert pretrained_kind(value) == kind
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageClassifier, "model")
    parsed = parser.parse_args(["--model.pretrained", value]).model.pretrained
    assert parsed == value and type(parsed) is str  # what the checkpoint's hyper-parameters keep, weights-only


@pytest.mark.parametrize("typo", ["torchvison", "best.ckp", "timm:", "a1_in1k"])
def test_anything_else_is_refused_in_one_line_when_the_command_line_is_parsed(typo):
    with pytest.raises(ValueError) as error:
        pretrained_kind(typo)
    assert str(error.value).startswith(f"{typo!r} names no pretrained weights: give torchvision, timm")
    assert "\n" not in str(error.value)
    message = option_error(ImageClassifier, "--model.pretrained", typo)
    assert "model.pretrained" in message and str(error.value) in message


def test_a_weights_file_is_looked_for_when_the_weights_load_not_when_parsed(tmp_path):
    model = ImageClassifier("cnn", num_classes=3, pretrained=str(tmp_path / "gone.pth"))  # evaluation elsewhere: fine
    with pytest.raises(FileNotFoundError, match="gone.pth' is no file"):
        model.load_pretrained()


def test_older_checkpoints_spelled_a_timm_tag_bare_and_load_as_what_they_meant():
    assert current_spelling("a1_in1k", "timm:resnet18") == "timm:a1_in1k"
    assert current_spelling("timm", "timm:resnet18") == "timm"
    for unchanged in ("torchvision", "timm:a1_in1k", "runs/best.ckpt", None):
        assert current_spelling(unchanged, "timm:resnet18") == unchanged
    assert current_spelling("a1_in1k", "resnet18") == "a1_in1k"  # never a timm tag: refused as it always was


def test_classifier_and_loader_agree_on_the_head_modules():
    model = ImageClassifier("googlenet", num_classes=4, backbone_kwargs={"aux_logits": True})
    assert head_modules(model.head_names) == ["aux1.fc2", "aux2.fc2", "fc"]
    [callback] = ImageClassifier(
        "googlenet", num_classes=4, freeze_backbone=True, backbone_kwargs={"aux_logits": True}
    ).configure_callbacks()
    assert callback.head == {"aux1.fc2", "aux2.fc2", "fc"}


def test_torchvision_weights_load_into_a_resnet_with_deformable_stages(tmp_path, monkeypatch):
    theirs = _torchvision_model("resnet18")
    _in_hub_cache(tmp_path, monkeypatch, "resnet18", theirs.state_dict())
    model = ImageClassifier(
        "resnet18",
        num_classes=1000,
        stem="imagenet",
        pretrained="torchvision",
        backbone_kwargs={"deform_stages": [2, 3, 4]},
    )
    model.load_pretrained()
    offsets = [v for k, v in model.backbone.state_dict().items() if "offset" in k]
    assert len(offsets) == 2 * 12 and all(torch.count_nonzero(v) == 0 for v in offsets)  # 12 deformable convs
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the deformable network starts as the plain one: all but the fresh head agree

        def features(m: nn.Module) -> torch.Tensor:
            return m.avgpool(m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))))))

        torch.testing.assert_close(features(model.backbone.eval()), features(theirs), rtol=1e-4, atol=1e-4)
