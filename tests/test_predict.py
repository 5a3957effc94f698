"""Using a trained model: predict on a folder of one's own images, export a standalone file."""

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.cli import main, run_stats
from zoo_lightning.export import StandaloneClassifier, export, load_standalone
from zoo_lightning.predict import _resize_center_crop, load_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_writer):
    """A cnn fitted for two steps through the CLI on a tiny CIFAR-10 python release."""
    root = tmp_path_factory.mktemp("predict")
    cifar_writer(root / "data")
    main(["fit", "--config", "cnn_cifar.yaml", "--data.data_dir", str(root / "data"), "--data.val_size", "20",
          "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false",
          "--trainer.logger.init_args.save_dir", str(root / "logs")])
    return root, root / "logs" / "cnn_cifar" / "version_0" / "checkpoints" / "last.ckpt"


def _photos(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (50, 32, 3), dtype=np.uint8)).save(folder / "tall.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), mode="RGBA").save(folder / "alpha.png")
    (folder / "notes.txt").write_text("not an image")


def test_predict_on_a_folder_matches_the_modules_forward(trained, tmp_path, monkeypatch):
    root, ckpt = trained
    photos = tmp_path / "photos"
    _photos(photos)
    shutil.rmtree(root / "data")  # prediction must not need the dataset
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="notes.txt"):
        main(["predict", "--ckpt_path", str(ckpt), "--data.predict_dir", str(photos),
              "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.enable_progress_bar", "false"])
    rows = list(csv.DictReader(open(next((tmp_path / "logs").rglob("predictions.csv")))))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["alpha.png", "gray.png", "tall.jpg", "wide.png"]

    checkpoint = torch.load(ckpt, weights_only=True)
    data_state = checkpoint["CIFAR10DataModule"]
    model = ImageClassifier.load_from_checkpoint(ckpt).eval()
    images, _ = load_folder(photos, 32)
    x = (images.float() / 255 - torch.tensor(data_state["mean"]).view(1, 3, 1, 1)) / torch.tensor(data_state["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model(x).softmax(1)
    names = data_state["class_names"]
    for row, p in zip(rows, probs):
        assert row["top1_class"] == names[p.argmax()]
        assert float(row["top1_probability"]) == pytest.approx(p.max().item(), abs=1e-4)
        assert row["top5_classes"].split() == [names[i] for i in p.topk(5).indices]


def test_resize_then_center_crop():
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (32, 1)))  # 64 wide, 32 tall, ramp in x
    out = _resize_center_crop(image, 16)
    assert out.shape == (16, 16, 3)
    assert out[0, 0, 0] > 10 and out[0, -1, 0] < 55  # the central half of the ramp, not its ends


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No readable image"):
        load_folder(tmp_path / "empty", 32)


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program"])
def test_export_runs_without_zoo_lightning_and_matches(trained, tmp_path, fmt):
    _, ckpt = trained
    out = export(ckpt, fmt, tmp_path / f"model.{fmt}")
    batch = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    torch.save(batch, tmp_path / "batch.pt")
    loader = "torch.jit.load(p)" if fmt == "torchscript" else "torch.export.load(p).module()"
    script = (f"import sys, torch; p = {str(out)!r}; m = {loader}; x = torch.load({str(tmp_path / 'batch.pt')!r}); "
              f"torch.save(m(x), {str(tmp_path / 'out.pt')!r}); "
              "assert not any(k.startswith('zoo_lightning') for k in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    module = ImageClassifier.load_from_checkpoint(ckpt).eval()
    state = torch.load(ckpt, weights_only=True)["CIFAR10DataModule"]
    x = (batch.float() / 255 - torch.tensor(state["mean"]).view(1, 3, 1, 1)) / torch.tensor(state["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, atol=1e-5, rtol=1e-5)


def test_export_refuses_foreign_or_broken_checkpoints(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a checkpoint written by"):
        load_standalone(foreign)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="Cannot read checkpoint"):
        load_standalone(broken)
    with pytest.raises(ValueError, match="format"):
        export(foreign, "onnx")


def test_export_refuses_a_model_with_several_outputs_in_eval(tmp_path, monkeypatch):
    class AlwaysAux(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.mean((2, 3))

    standalone = StandaloneClassifier(AlwaysAux(), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    monkeypatch.setattr("zoo_lightning.export.load_standalone", lambda path: (standalone, {"image_size": 8}))
    with pytest.raises(ValueError, match="aux_logits"):
        export(tmp_path / "any.ckpt", "torchscript", tmp_path / "out.ts")
    assert not (tmp_path / "out.ts").exists()


def test_stats_command_prints_the_training_split_statistics(cifar_python, capsys):
    root, _ = cifar_python
    run_stats(["--data.class_path", "zoo_lightning.data.CIFAR10DataModule", "--data.init_args.data_dir", str(root),
               "--data.init_args.val_size", "0"])
    out = capsys.readouterr().out
    from zoo_lightning.data import CIFAR10DataModule

    data = CIFAR10DataModule(data_dir=str(root), val_size=0)
    data.setup()
    assert f"{data.mean[0]:.5f}" in out and f"{data.std[2]:.5f}" in out
