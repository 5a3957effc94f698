"""Malformed command lines and configs: each exits non-zero with a short message and no traceback.

The README's "When things go wrong" table lists the same cases with the message a user sees.
"""

from pathlib import Path

import pytest
import torch

from zoo_lightning.cli import main
from zoo_lightning.models import create_model


@pytest.fixture(scope="module")
def world(tmp_path_factory, cifar_writer, image_folder_writer):
    """Tiny CIFAR data, a trained checkpoint, and broken files to feed the CLI."""
    root = tmp_path_factory.mktemp("bad")
    cifar_writer(root / "data")
    image_folder_writer(root / "folder", per_class=2)
    (root / "folder" / "train" / "bird" / "broken.png").write_bytes(b"not a png")
    (root / "empty").mkdir()
    (root / "photos").mkdir()
    main(["fit", "--config", "cnn_cifar.yaml", "--data.data_dir", str(root / "data"), "--data.val_size", "20",
          "--data.batch_size", "16", "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
          "--trainer.logger.init_args.save_dir", str(root / "logs")])
    ckpt = next((root / "logs").rglob("last.ckpt"))
    (root / "truncated.ckpt").write_bytes(ckpt.read_bytes()[:5000])
    torch.save({"weights": torch.zeros(3)}, root / "foreign.ckpt")
    torch.save(create_model("cnn", num_classes=7).state_dict(), root / "cnn7.pt")  # a 7-class teacher
    return root, ckpt


def fit(root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", "cnn_cifar.yaml", "--data.data_dir", str(root / "data"), "--data.val_size", "20",
            "--data.batch_size", "16", "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(root / "runs"), *extra]


def distill(root: Path, *extra: str) -> list[str]:
    return fit(root, "--model.objective", "zoo_lightning.objectives.Distillation", *extra)


# (case, command line built from the fixture, a fragment of the message the user sees)
CASES = [
    ("config file that does not exist", lambda r, c: ["fit", "--config", "no_such.yaml"], "no_such.yaml"),
    ("unknown trainer key", lambda r, c: fit(r, "--trainer.max_epoch", "3"), "max_epoch"),
    ("unknown data key", lambda r, c: fit(r, "--data.batchsize", "3"), "batchsize"),
    ("wrong type", lambda r, c: fit(r, "--data.batch_size", "many"), "batch_size"),
    ("zero batch size", lambda r, c: fit(r, "--data.batch_size", "0"), "batch_size must be >= 1"),
    ("negative batch size", lambda r, c: fit(r, "--data.batch_size", "-8"), "batch_size must be >= 1"),
    ("negative val_size", lambda r, c: fit(r, "--data.val_size", "-1"), "val_size must be >= 0"),
    ("val_size >= train set", lambda r, c: fit(r, "--data.val_size", "100"), "leaves no training images"),
    ("unknown backbone", lambda r, c: fit(r, "--model.backbone", "resnet2O"), "'resnet20'"),
    ("unknown torchvision model", lambda r, c: fit(r, "--model.backbone", "torchvision:resnet_18"), "torchvision.models"),
    ("unknown stem", lambda r, c: fit(r, "--model.stem", "tiny"), "Unknown stem 'tiny'"),
    ("missing data_dir", lambda r, c: fit(r, "--data.data_dir", str(r / "nowhere"), "--data.download", "false"),
     "No CIFAR-10 under"),
    ("empty data_dir", lambda r, c: fit(r, "--data.data_dir", str(r / "empty"), "--data.download", "false"),
     "--data.download true"),
    ("unreadable image in a folder", lambda r, c: fit(r, "--data.data_dir", str(r / "folder"), "--data.val_size", "1"),
     "broken.png"),
    ("unknown tta", lambda r, c: fit(r, "--model.tta", "rotate"), "Unknown tta 'rotate'"),
    ("unknown mix", lambda r, c: fit(r, "--data.pipeline.mix", "mosaic"), "Unknown mix 'mosaic'"),
    ("unknown precision", lambda r, c: fit(r, "--trainer.precision", "17"), "precision"),
    ("teacher checkpoint missing", lambda r, c: distill(r, "--model.objective.teacher", str(r / "gone.ckpt")),
     "gone.ckpt"),
    ("teacher checkpoint truncated", lambda r, c: distill(r, "--model.objective.teacher", str(r / "truncated.ckpt")),
     "Cannot read the teacher checkpoint"),
    ("teacher with other class count", lambda r, c: distill(
        r, "--model.objective.teacher", "cnn", "--model.objective.teacher_weights", str(r / "cnn7.pt"),
        "--model.objective.teacher_kwargs", "{num_classes: 7}"), "teacher predicts 7 classes but the student 10"),
    ("temperature <= 0", lambda r, c: distill(r, "--model.objective.teacher", str(c),
                                              "--model.objective.temperature", "0"), "temperature must be > 0"),
    ("alpha outside [0, 1]", lambda r, c: distill(r, "--model.objective.teacher", str(c),
                                                  "--model.objective.alpha", "1.5"), "alpha must be in [0, 1]"),
    ("truncated --ckpt_path", lambda r, c: ["test", "--ckpt_path", str(r / "truncated.ckpt")], "Cannot read checkpoint"),
    ("foreign --ckpt_path", lambda r, c: ["test", "--ckpt_path", str(r / "foreign.ckpt")],
     "not a checkpoint written by"),
    ("resume with nothing to resume", lambda r, c: fit(r, "--ckpt_path", "last",
                                                       "--trainer.logger.init_args.name", "fresh"), "No run under"),
    ("predict on an empty folder", lambda r, c: ["predict", "--ckpt_path", str(c), "--data.predict_dir",
                                                 str(r / "photos"), "--trainer.enable_progress_bar", "false",
                                                 "--trainer.logger.init_args.save_dir", str(r / "runs")],
     "No readable image"),
    ("export of a foreign file", lambda r, c: ["export", "--ckpt_path", str(r / "foreign.ckpt")],
     "not a checkpoint written by"),
    ("learning rate so high the loss diverges", lambda r, c: fit(r, "--model.optimizer.init_args.lr", "1e12",
                                                                   "--trainer.max_steps", "30"), "Non-finite loss"),
    ("models pattern that matches nothing", lambda r, c: ["models", "zzz*"], "No registered model matches"),
    ("downloaded archive with the wrong checksum", lambda r, c: fit(r, "--data.data_dir", str(r / "download"),
                                                                      "--data.download", "true"),
     "does not have the official MD5"),
]


@pytest.mark.parametrize("case, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_message(world, case, argv, fragment, capsys, monkeypatch):
    from torchvision.datasets import utils

    root, ckpt = world
    monkeypatch.chdir(root)
    # The network, for the download case: it answers with an error page instead of the archive.
    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(utils, "_urlretrieve", lambda url, path, chunk_size=0: Path(path).write_bytes(b"<html>503</html>"))
    with pytest.raises(SystemExit) as exit_info:
        main(argv(root, ckpt))
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert fragment in err, err[-1500:]
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 12  # a short message, not a wall


def test_the_list_is_long_enough():
    assert len(CASES) >= 20
