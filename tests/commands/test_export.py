"""export: a standalone model file that runs without this project and gives the module's logits."""

import subprocess
import sys

import pytest
import torch

from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.commands.export import StandaloneClassifier, export, load_standalone
from zoo_lightning.data.transforms import Normalize


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program"])
def test_export_runs_without_zoo_lightning_and_matches(trained_cnn, tmp_path, fmt):
    _, ckpt = trained_cnn
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
    x = Normalize(state["mean"], state["std"])(batch)
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

    standalone = StandaloneClassifier(AlwaysAux(), Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)))
    monkeypatch.setattr("zoo_lightning.commands.export.load_standalone", lambda path: (standalone, {"image_size": 8}))
    with pytest.raises(ValueError, match="aux_logits"):
        export(tmp_path / "any.ckpt", "torchscript", tmp_path / "out.ts")
    assert not (tmp_path / "out.ts").exists()
