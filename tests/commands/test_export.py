"""export: a standalone model file that runs without this project and gives the module's logits."""

import json
import subprocess
import sys

import pytest
import torch

from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.commands.export import StandaloneClassifier, export, load_standalone, save_onnx
from zoo_lightning.data.transforms import Normalize
from zoo_lightning.models import create_model
from zoo_lightning.models.layers import ModulatedDeformConv2d


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program"])
def test_export_runs_without_zoo_lightning_and_matches(trained_cnn, tmp_path, fmt):
    _, ckpt = trained_cnn
    out = export(ckpt, fmt, tmp_path / f"model.{fmt}")
    batch = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    torch.save(batch, tmp_path / "batch.pt")
    loader = "torch.jit.load(p)" if fmt == "torchscript" else "torch.export.load(p).module()"
    script = (
        f"import sys, torch; p = {str(out)!r}; m = {loader}; x = torch.load({str(tmp_path / 'batch.pt')!r}); "
        f"torch.save(m(x), {str(tmp_path / 'out.pt')!r}); "
        "assert not any(k.startswith('zoo_lightning') for k in sys.modules)"
    )
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
        export(foreign, "tflite")


def test_export_refuses_a_model_with_several_outputs_in_eval(tmp_path, monkeypatch):
    class AlwaysAux(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.mean((2, 3))

    standalone = StandaloneClassifier(AlwaysAux(), Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)))
    monkeypatch.setattr("zoo_lightning.commands.export.load_standalone", lambda path: (standalone, {"image_size": 8}))
    with pytest.raises(ValueError, match="aux_logits"):
        export(tmp_path / "any.ckpt", "torchscript", tmp_path / "out.ts")
    assert not (tmp_path / "out.ts").exists()


def _standalone(name: str) -> StandaloneClassifier:
    """An untrained backbone behind CIFAR-10-like normalization, its BatchNorm statistics moved off their start
    (a few training-mode passes) so that the outputs depend on every layer's eval-mode arithmetic."""
    torch.manual_seed(0)
    backbone = create_model(name, num_classes=10)
    with torch.no_grad():
        for layer in backbone.modules():  # deformable convs: real offsets, not the plain grid they start on
            if isinstance(layer, ModulatedDeformConv2d):
                layer.offset_weight.normal_(0.0, 0.05)
                layer.offset_bias.normal_(0.0, 0.5)
        for _ in range(3):
            backbone.train()(torch.randn(16, 3, 32, 32))
    model = StandaloneClassifier(backbone, Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)))
    return model.eval().requires_grad_(False)


# ONNX Runtime's kernels sum in other orders than PyTorch's. Measured here, logits of size 0.3-2: at most 7e-7
# apart for cnn, resnet20 and efficientnet_b0, 5e-5 for dcn_resnet20 (ONNX's DeformConv against torchvision's
# bilinear sampling). The tolerance: 1e-4 absolute plus 1e-4 of the logit.
ONNX_TOLERANCE = dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cnn", "resnet20", "efficientnet_b0", "dcn_resnet20"])
def test_onnx_runtime_gives_the_pytorch_logits_at_any_batch_size(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _standalone(name)
    example = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    save_onnx(model, example, tmp_path / "model.onnx", {"class_names": "[]"})
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for batch in (1, 7):
        images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images)
        assert logits.shape == (batch, 10)
        torch.testing.assert_close(torch.from_numpy(logits), expected, **ONNX_TOLERANCE)


def test_onnx_export_of_a_checkpoint_carries_its_class_names(trained_cnn, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _, ckpt = trained_cnn
    out = export(ckpt, "onnx", tmp_path / "exported" / "model.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    state = torch.load(ckpt, weights_only=True)["CIFAR10DataModule"]
    class_names = json.loads(metadata["class_names"])
    assert class_names == state["class_names"] and len(class_names) == 10 and class_names[0] == "airplane"
    assert metadata["image_size"] == "32" and json.loads(metadata["mean"]) == list(state["mean"])
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    module = ImageClassifier.load_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        expected = module(Normalize(state["mean"], state["std"])(images))
    torch.testing.assert_close(
        torch.from_numpy(session.run(None, {"images": images.numpy()})[0]), expected, **ONNX_TOLERANCE
    )


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_onnx_without_its_extra_is_one_line_naming_the_extra(trained_cnn, tmp_path, monkeypatch, capsys, missing):
    from zoo_lightning.cli import main

    monkeypatch.setitem(sys.modules, missing, None)  # `import onnx...` now raises ImportError, as when not installed
    _, ckpt = trained_cnn
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["export", "--ckpt_path", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "model.onnx")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("error: --format onnx needs the onnx extra") and missing in errors[0]
    assert "pip install -c constraints.txt -e '.[onnx]'" in errors[0]
    assert not (tmp_path / "model.onnx").exists()


def test_the_docs_example_classifies_a_folder_from_the_default_export_without_this_project(trained_cnn, tmp_path):
    """docs/data.md's classify.py, run as a user would: the .pt2 carries the class names and the input size."""
    from pathlib import Path

    from PIL import Image

    from zoo_lightning.commands.export import main

    _, ckpt = trained_cnn
    out = tmp_path / "model.pt2"
    main(["--ckpt_path", str(ckpt), "--out", str(out)])  # the default format
    page = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    script = page.split("<!-- classify.py: tests/commands/test_export.py runs it -->\n```python\n")[1].split("```")[0]
    (tmp_path / "classify.py").write_text(script)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, size in (("a.png", (40, 30)), ("b.jpg", (32, 32))):
        Image.new("RGB", size, (200, 10, 10)).save(photos / name)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; runpy.run_path('classify.py', run_name='__main__');"
            "assert not any(k.startswith('zoo_lightning') for k in sys.modules)",
            str(out),
            str(photos),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = json.loads(json.dumps(torch.load(ckpt, weights_only=True)["CIFAR10DataModule"]["class_names"]))
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == ["a.png", "b.jpg"] and all(line[1] in names for line in lines)


def test_the_format_follows_the_suffix_of_out_unless_given_and_a_contradiction_is_refused():
    from zoo_lightning.commands.export import format_for

    assert format_for(None, None) == "exported_program"
    assert [format_for(None, f"m{s}") for s in (".ts", ".pt2", ".onnx", ".bin")] == [
        "torchscript",
        "exported_program",
        "onnx",
        "exported_program",
    ]
    assert format_for("onnx", "m.onnx") == "onnx" and format_for("torchscript", "model") == "torchscript"
    with pytest.raises(ValueError, match="--out m.ts names a torchscript file, and --format is onnx"):
        format_for("onnx", "m.ts")
