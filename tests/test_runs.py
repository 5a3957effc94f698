"""How runs are named: one rule for fit and sweep."""

from zoo_lightning.runs import DEFAULT_EXPERIMENT, experiment_name


def test_the_given_name_wins_then_the_first_config_then_the_backbone():
    assert experiment_name("mine", ["a/resnet56_cifar.yaml"], "resnet56") == "mine"
    assert experiment_name(DEFAULT_EXPERIMENT, ["a/resnet56_cifar.yaml", "tweaks.yaml"], "resnet56") == "resnet56_cifar"
    assert experiment_name(None, [], "resnet56") == "resnet56"
    assert experiment_name(DEFAULT_EXPERIMENT, [], "timm:resnet18.a1_in1k") == "timm_resnet18.a1_in1k"
