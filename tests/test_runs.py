"""How runs are named: one rule for fit, sweep and selftrain; folders claimed once."""

from pathlib import Path

import pytest

from zoo_lightning.runs import DEFAULT_EXPERIMENT, claim_named_run, experiment_dir, experiment_name


def test_the_given_name_wins_then_the_first_config_then_the_backbone():
    assert experiment_name("mine", ["a/resnet56_cifar.yaml"], "resnet56") == "mine"
    assert experiment_name(DEFAULT_EXPERIMENT, ["a/resnet56_cifar.yaml", "tweaks.yaml"], "resnet56") == "resnet56_cifar"
    assert experiment_name(None, [], "resnet56") == "resnet56"
    assert experiment_name(DEFAULT_EXPERIMENT, [], "timm:resnet18.a1_in1k") == "timm_resnet18.a1_in1k"


def test_experiment_dir_reads_the_config_then_either_spelling_on_the_command_line(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("trainer:\n  logger:\n    class_path: TensorBoardLogger\n    init_args:\n      save_dir: cfg_logs\n")
    assert experiment_dir(config, []) == Path("cfg_logs") / "recipe"
    assert experiment_dir(config, ["--trainer.logger.save_dir", "a", "--trainer.logger.name", "n"]) == Path("a") / "n"
    long = ["--trainer.logger.init_args.save_dir=b", "--trainer.logger.init_args.name", "m"]
    assert experiment_dir(config, long) == Path("b") / "m"
    # The last one given wins, whichever way it is spelled.
    assert experiment_dir(config, [*long, "--trainer.logger.save_dir", "c"]) == Path("c") / "m"
    bare = tmp_path / "bare.yaml"
    bare.write_text("model:\n  backbone: resnet20\n")
    assert experiment_dir(bare, []) == Path("lightning_logs") / "bare"


def test_a_named_run_never_reuses_a_folder(tmp_path):
    first = claim_named_run(tmp_path, "round_1")
    second = claim_named_run(tmp_path, "round_1")
    assert (first.name, second.name) == ("round_1", "round_1_v2")
    assert first.is_dir() and second.is_dir()
    with pytest.raises(FileExistsError):
        from zoo_lightning.runs import claim_run_dir

        claim_run_dir(tmp_path, "round_1")
