"""The command line as the parsers read it: shipped configs by name, config files checked, one-line refusals."""

import pytest
from jsonargparse import ArgumentParser

from zoo_lightning.options import PaddingMode, PositiveInt
from zoo_lightning.parsing import CONFIG_DIR, DEFAULTS, ConfigFile, Parser, one_line, resolve_config


def test_config_names_resolve_against_the_shipped_configs(tmp_path, monkeypatch):
    assert resolve_config("resnet20_cifar.yaml") == CONFIG_DIR / "resnet20_cifar.yaml"
    assert resolve_config("cnn_cifar") == CONFIG_DIR / "cnn_cifar.yaml"
    assert resolve_config("configs/cnn_cifar.yaml") == CONFIG_DIR / "cnn_cifar.yaml"  # the old spelling
    local = tmp_path / "mine.yaml"
    local.write_text("trainer: {}\n")
    assert resolve_config(str(local)) == local
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cnn_cifar.yaml").write_text("trainer: {}\n")  # a file of the user's wins over the shipped one
    assert resolve_config("cnn_cifar.yaml").resolve() == (tmp_path / "cnn_cifar.yaml").resolve()


def test_a_misspelled_config_name_suggests_the_shipped_ones_it_resembles():
    with pytest.raises(FileNotFoundError, match="did you mean resnet20_cifar.yaml"):
        resolve_config("resnet20_cifr.yaml")
    with pytest.raises(FileNotFoundError) as raised:
        resolve_config("zzzz.yaml")
    assert "did you mean" not in str(raised.value) and "'zzzz.yaml' not found" in str(raised.value)


def test_the_defaults_are_shipped_beside_the_configs():
    assert DEFAULTS.parent == CONFIG_DIR and DEFAULTS.is_file()


def _parser() -> ArgumentParser:
    parser = Parser(prog="probe", exit_on_error=True)
    parser.add_argument("--config", action=ConfigFile)
    parser.add_argument("--count", type=PositiveInt, default=1)
    parser.add_argument("--mode", type=PaddingMode | None, default=None)
    return parser


def test_the_config_option_takes_a_shipped_name_and_refuses_a_broken_file_in_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("count: 3\n")
    assert _parser().parse_args(["--config", str(tmp_path / "c.yaml")]).count == 3
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ValueError, match="empty.yaml is empty"):
        _parser().parse_args(["--config", str(tmp_path / "empty.yaml")])
    (tmp_path / "bad.yaml").write_text("count: [\n")
    with pytest.raises(ValueError, match="bad.yaml is not valid YAML at line 2"):
        _parser().parse_args(["--config", str(tmp_path / "bad.yaml")])


@pytest.mark.parametrize(
    "args, says",
    [
        (["--count", "0"], "--count: '0' is not >= 1"),
        (["--count", "two"], "--count: 'two' is not a whole number >= 1"),
        (["--mode", "mirror"], "--mode: Expected a typing.Literal['zeros', 'reflect']. Got value: mirror"),
    ],
)
def test_a_refused_value_is_one_line_naming_the_option_and_the_reason(args, says, capsys):
    with pytest.raises(SystemExit) as stop:
        _parser().parse_args(args)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: {says}. `probe --help` lists the options."


def test_our_own_errors_keep_their_message_and_a_suppressed_context_is_not_followed():
    try:
        try:
            raise KeyError("inner")
        except KeyError:
            raise ValueError("Give --data.data_dir an existing folder.") from None
    except ValueError as error:
        assert one_line(error) == "Give --data.data_dir an existing folder."


def test_an_unknown_option_suggests_the_known_one_it_resembles(capsys):
    from zoo_lightning.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", "cnn_cifar.yaml", "--trainer.max_epoch", "3"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--trainer.max_epoch 3; did you mean --trainer.max_epochs (not --trainer.max_epoch)?" in line


def test_the_parsers_own_flags_are_never_taken_for_mistyped_options(capsys):
    from zoo_lightning.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", "cnn_cifar.yaml", "--data.pipeline.crop_padding", "-1", "--print_config"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--data.pipeline.crop_padding" in line and "did you mean" not in line
