import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.models import create_model
from zoo_lightning.models.googlenet import GoogLeNetOutputs
from zoo_lightning.objectives import AuxiliaryLoss, CrossEntropy, Distillation, distillation_kl


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def _loader(n: int = 16, num_classes: int = 10) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, num_classes, (n,), generator=g)),
                      batch_size=8)


@pytest.fixture
def teacher_ckpt(tmp_path):
    """A checkpoint of this project: a resnet20 trained for two steps."""
    model = ImageClassifier("resnet20", num_classes=10)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader())
    path = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_kd_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.5, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    t = 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p = [math.exp(v / t) for v in t_row]
        q = [math.exp(v / t) for v in s_row]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = expected / 2 * t * t
    assert distillation_kl(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)


def test_t_squared_keeps_the_soft_gradient_scale():
    torch.manual_seed(0)
    teacher = torch.randn(64, 10) * 3
    norms = {}
    for t in (2.0, 8.0):
        student = torch.randn(64, 10, generator=torch.Generator().manual_seed(1)).requires_grad_()
        distillation_kl(student, teacher, t).backward()
        norms[t] = student.grad.norm().item()
    # Without T^2 the gradient would shrink about 16x from T=2 to T=8 (1/T^2); with it, within ~2x.
    assert 0.5 < norms[8.0] / norms[2.0] < 2.0


def test_teacher_stays_frozen_out_of_the_optimizer_and_the_checkpoint(teacher_ckpt, tmp_path):
    objective = Distillation(str(teacher_ckpt), temperature=4.0, alpha=0.9)
    teacher = objective.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = ImageClassifier("cnn", num_classes=10, objective=objective)
    trainer = _trainer(tmp_path, max_steps=3)
    trainer.fit(student, _loader())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert all(k.startswith(("backbone.",)) for k in state), [k for k in state if not k.startswith("backbone.")][:5]


def test_distillation_terms_and_weights(teacher_ckpt):
    objective = Distillation(str(teacher_ckpt), temperature=3.0, alpha=0.25)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    student_logits = torch.randn(4, 10)
    terms = objective(student_logits, targets, images)
    ce = torch.nn.functional.cross_entropy(student_logits, targets)
    kd = distillation_kl(student_logits, objective.teacher(images), 3.0)
    torch.testing.assert_close(terms["ce"], ce)
    torch.testing.assert_close(terms["kd"], kd)
    torch.testing.assert_close(terms["loss"], 0.75 * ce + 0.25 * kd)
    unlabeled = objective.unlabeled(student_logits, images)
    torch.testing.assert_close(unlabeled["loss"], 0.25 * kd)


def test_teacher_from_a_registry_name_and_state_dict(tmp_path):
    weights = tmp_path / "cnn.pt"
    source = create_model("cnn", num_classes=10)
    torch.save(source.state_dict(), weights)
    objective = Distillation("cnn", teacher_weights=str(weights), teacher_kwargs={"num_classes": 10})
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(objective.teacher(x), source.eval()(x))


def test_aux_heads_count_in_training_with_their_weight():
    logits, aux2, aux1 = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    targets = torch.tensor([0, 1, 2, 3])
    terms = AuxiliaryLoss(weight=0.3, label_smoothing=0.0)(GoogLeNetOutputs(logits, aux2, aux1), targets, None)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(terms["loss"], ce(logits, targets) + 0.3 * (ce(aux1, targets) + ce(aux2, targets)))


def test_googlenet_trains_with_aux_loss_and_evaluates_without_heads(tmp_path):
    model = ImageClassifier("googlenet", num_classes=10, objective=AuxiliaryLoss(), backbone_kwargs={"aux_logits": True})
    calls = []
    original = model.objective.forward
    model.objective.forward = lambda outputs, *a: calls.append(type(outputs)) or original(outputs, *a)
    _trainer(tmp_path, max_steps=1, limit_val_batches=1).fit(model, _loader(8), _loader(8))
    assert calls == [GoogLeNetOutputs]  # validation never hands the objective aux outputs


def test_aux_loss_on_a_backbone_without_heads_is_a_clear_error():
    with pytest.raises(ValueError, match="aux_logits"):
        AuxiliaryLoss()(torch.randn(2, 5), torch.tensor([0, 1]), None)


@pytest.mark.parametrize("kwargs, match", [({"temperature": 0}, "temperature"), ({"alpha": 1.5}, "alpha"),
                                           ({"alpha": -0.1}, "alpha")])
def test_bad_distillation_settings(teacher_ckpt, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Distillation(str(teacher_ckpt), **kwargs)


def test_bad_teachers(teacher_ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Distillation(str(tmp_path / "missing.ckpt"))
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(teacher_ckpt.read_bytes()[:2000])
    with pytest.raises(ValueError, match="Cannot load the teacher"):
        Distillation(str(broken))
    with pytest.raises(ValueError, match="teacher predicts 10 classes but the student 7"):
        ImageClassifier("cnn", num_classes=7, objective=Distillation(str(teacher_ckpt)))


def test_cross_entropy_accepts_soft_targets():
    logits = torch.randn(3, 4)
    soft = torch.softmax(torch.randn(3, 4), dim=1)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(CrossEntropy(label_smoothing=0.0)(logits, soft, None)["loss"], expected)
