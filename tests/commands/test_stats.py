"""stats: the command prints the statistics the DataModule computes from its training part."""

from zoo_lightning.commands.stats import main


def test_stats_command_prints_the_training_split_statistics(cifar_python, capsys):
    root, _ = cifar_python
    main(
        [
            "--data.class_path",
            "zoo_lightning.data.CIFAR10DataModule",
            "--data.init_args.data_dir",
            str(root),
            "--data.init_args.val_size",
            "0",
        ]
    )
    out = capsys.readouterr().out
    from zoo_lightning.data import CIFAR10DataModule

    data = CIFAR10DataModule(data_dir=str(root), val_size=0)
    data.setup()
    assert f"{data.mean[0]:.5f}" in out and f"{data.std[2]:.5f}" in out
