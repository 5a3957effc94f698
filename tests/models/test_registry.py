import pytest
import torch
from torch import nn

from zoo_lightning.models import UnknownModelError, create_model, list_models, model_entry, register_model
from zoo_lightning.models.registry import _REGISTRY
from zoo_lightning.models.summary import count_mflops, model_rows, print_model_table


def test_duplicate_names_are_refused():
    def resnet18(**kwargs):
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet18)


def test_list_models_filters_with_fnmatch():
    assert list_models("resnet1*") == ["resnet101", "resnet110", "resnet152", "resnet18"]
    assert list_models("no_such_*") == []


def test_unknown_name_lists_the_closest_matches():
    with pytest.raises(UnknownModelError) as error:
        create_model("resnet2O")
    assert "'resnet20'" in str(error.value) and "models" in str(error.value)


def test_torchvision_prefix_builds_any_classifier():
    for name in ("torchvision:resnet18", "torchvision:squeezenet1_0"):
        model = create_model(name, num_classes=7).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(UnknownModelError, match="resnet18"):  # the closest torchvision name is offered
        create_model("torchvision:resnet_18")


def test_timm_prefix_builds_when_timm_is_installed():
    pytest.importorskip("timm")
    for name in ("timm:resnet18", "timm:resnet18.a1_in1k"):  # a pretrained tag only names a config here
        model = create_model(name, num_classes=7).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(UnknownModelError, match="timm"):
        create_model("timm:resnet_eighteen")


def test_bad_stem_and_prefix():
    with pytest.raises(ValueError, match="stem"):
        create_model("resnet18", stem="tiny")
    with pytest.raises(UnknownModelError, match="prefix"):
        create_model("keras:resnet18")


def test_entry_records_family_and_paper():
    entry = model_entry("densenet121")
    assert entry.family == "densenet" and "Huang et al., 2017" in entry.paper


def test_a_new_backbone_is_one_decorator(tmp_path):
    @register_model
    def test_registry_tiny(num_classes: int = 10, stem: str = "cifar", **kwargs) -> nn.Module:
        """A tiny test net."""
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    try:
        assert "test_registry_tiny" in list_models()
        assert create_model("test_registry_tiny", num_classes=3)(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    finally:
        del _REGISTRY["test_registry_tiny"]


def test_flops_of_the_plain_cnn_equal_a_hand_count():
    # 3x3 convs 3->32 at 32x32, 32->64 at 16x16, 64->128 at 8x8, 128->256 at 4x4, then a 256->10 linear;
    # FlopCounterMode counts convolutions and matmuls only (not BatchNorm, ReLU or pooling).
    macs = 9 * (3 * 32 * 32 * 32 + 32 * 64 * 16 * 16 + 64 * 128 * 8 * 8 + 128 * 256 * 4 * 4) + 256 * 10
    assert count_mflops("cnn", "cifar", 32) == pytest.approx(2 * macs / 1e6, abs=1e-9)


def test_flops_follow_the_two_per_multiply_add_convention():
    # resnet18 at 224: about 1.82 G multiply-adds, so about 3.6 GFLOPs.
    assert count_mflops("resnet18", "imagenet", 224, num_classes=1000) == pytest.approx(3640, rel=0.01)
    rows = {row.name: row for row in model_rows("resnet20")}
    assert rows["resnet20"].params_m == pytest.approx(0.27, abs=0.005)
    assert rows["resnet20"].mflops_cifar == pytest.approx(2 * 40.8, rel=0.03)  # He et al.: 41M FLOPs (MACs)


def test_model_table_prints_matching_rows_and_states_the_convention(capsys):
    print_model_table("resnet2*")
    out = capsys.readouterr().out
    assert "1 multiply-add = 2 FLOPs" in out and "MFLOPs 224x224 imagenet" in out
    assert "resnet20" in out and "0.27" in out and "resnet18" not in out
    with pytest.raises(ValueError, match="No registered model matches"):
        print_model_table("no_such_model*")
