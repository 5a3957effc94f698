"""Teachers: from a checkpoint or a registry name with weights, and every bad teacher refused."""

import pytest
import torch

from tests.objectives.conftest import TINY_CNN
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.models import create_model
from zoo_lightning.objectives import Distillation


def test_teacher_from_a_registry_name_and_state_dict(tmp_path):
    weights = tmp_path / "cnn.pt"
    source = create_model("cnn", num_classes=10, **TINY_CNN)
    torch.save(source.state_dict(), weights)
    objective = Distillation("cnn", teacher_weights=str(weights), teacher_kwargs={"num_classes": 10, **TINY_CNN})
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(objective.teacher(x), source.eval()(x))
    with pytest.raises(ValueError, match="give its trained weights with teacher_weights"):
        Distillation("cnn")
    with pytest.raises(ValueError, match="check teacher_kwargs"):
        Distillation("cnn", teacher_weights=str(weights), teacher_kwargs={"num_classes": 7, **TINY_CNN})


def test_bad_teachers(teacher_ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="no existing checkpoint file. Train the teacher first"):
        Distillation(str(tmp_path / "missing.ckpt"))
    with pytest.raises(FileNotFoundError, match=r"nor a registered model name \(closest: resnet56"):
        Distillation("resnet65")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(teacher_ckpt.read_bytes()[:2000])
    with pytest.raises(ValueError, match="Cannot read the teacher checkpoint.*complete .ckpt"):
        Distillation(str(broken))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(ValueError, match="no checkpoint of this project"):
        Distillation(str(foreign))
    with pytest.raises(ValueError, match="rebuilt from its own saved hyper-parameters"):
        Distillation(str(teacher_ckpt), teacher_kwargs={"num_classes": 10})
    with pytest.raises(ValueError, match="teacher predicts 10 classes but the student 7"):
        ImageClassifier("cnn", num_classes=7, objective=Distillation(str(teacher_ckpt)))
