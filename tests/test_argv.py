"""Command-line helpers: shipped configs found by name, option values read as argparse would."""

from zoo_lightning.argv import CONFIG_DIR, DEFAULTS, option_value, resolve_config, resolve_config_args


def test_config_names_resolve_against_the_shipped_configs(tmp_path, monkeypatch):
    args = resolve_config_args(["fit", "--config", "resnet20_cifar.yaml", "--config=cnn_cifar"])
    assert args[2] == str(CONFIG_DIR / "resnet20_cifar.yaml")
    assert args[3] == f"--config={CONFIG_DIR / 'cnn_cifar.yaml'}"
    assert resolve_config("configs/cnn_cifar.yaml") == str(CONFIG_DIR / "cnn_cifar.yaml")  # the old spelling
    local = tmp_path / "mine.yaml"
    local.write_text("trainer: {}\n")
    assert resolve_config_args(["--config", str(local)])[1] == str(local)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cnn_cifar.yaml").write_text("trainer: {}\n")  # a file of the user's wins over the shipped one
    assert resolve_config("cnn_cifar.yaml") == "cnn_cifar.yaml"
    assert resolve_config("no_such.yaml") == "no_such.yaml"  # left for the parser to refuse


def test_the_defaults_are_shipped_beside_the_configs():
    assert DEFAULTS.parent == CONFIG_DIR and DEFAULTS.is_file()


def test_option_value_takes_both_spellings_and_the_last_wins():
    argv = ["fit", "--a", "1", "--b=2", "--a=3"]
    assert option_value(argv, "--a") == "3" and option_value(argv, "--b") == "2"
    assert option_value(argv, "--c") is None and option_value(["--a"], "--a") is None
