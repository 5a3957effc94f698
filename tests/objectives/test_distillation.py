"""Distillation: the KD loss by hand, the T^2 scale, a frozen teacher, what each evaluation logs."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import check_option_type
from tests.objectives.conftest import (
    TINY_CNN,
    Recorder,
    quiet_trainer,
    random_data,
    random_loader,
)
from zoo_lightning.batch import TwoStreamBatch
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.objectives import (
    CrossEntropy,
    Distillation,
    distillation_kl,
)


def test_kd_loss_equals_a_hand_computation():
    student = [[1.0, 2.0, 0.0], [0.5, 0.5, 3.0]]
    teacher = [[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]
    t = 2.0

    def softmax(row):
        e = [math.exp(v / t) for v in row]
        return [v / sum(e) for v in e]

    kl = sum(sum(p * math.log(p / q) for p, q in zip(softmax(tr), softmax(sr))) for sr, tr in zip(student, teacher))
    expected = kl / 2 * t * t  # batchmean over 2 rows, times T^2
    # Worked out on paper: row 1 KL = (0.5065 - 0.3072) x 0.5 = 0.0997, row 2 = 0.0497; (sum / 2) x 4:
    assert expected == pytest.approx(0.2987, abs=1e-4)
    assert distillation_kl(torch.tensor(student), torch.tensor(teacher), t).item() == pytest.approx(expected, rel=1e-6)


def test_t_squared_keeps_the_soft_gradient_scale():
    teacher = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * 3
    norms = {}
    for t in (2.0, 8.0):
        student = torch.randn(64, 10, generator=torch.Generator().manual_seed(1)).requires_grad_()
        distillation_kl(student, teacher, t).backward()
        norms[t] = student.grad.norm().item()
    ratio = norms[8.0] / norms[2.0]
    assert 0.5 < ratio < 2.0
    # Without the T^2 factor the same gradients would shrink about 16x from T=2 to T=8.
    assert ratio * (2.0 / 8.0) ** 2 < 0.1


def test_distillation_terms_weights_soft_targets_and_unlabeled(teacher_ckpt):
    objective = Distillation(str(teacher_ckpt), temperature=3.0, alpha=0.25)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    student_logits = torch.randn(4, 10)
    kd = distillation_kl(student_logits, objective.teacher(images), 3.0)
    for y in (targets, F.one_hot(targets, 10).float() * 0.6 + 0.04):  # hard, then soft (MixUp-like) targets
        terms = objective(student_logits, y, images)
        ce = F.cross_entropy(student_logits, y)
        torch.testing.assert_close(terms["ce"], ce)
        torch.testing.assert_close(terms["kd"], kd)
        torch.testing.assert_close(terms["loss"], 0.75 * ce + 0.25 * kd)
    unlabeled = objective.unlabeled(student_logits, images)
    torch.testing.assert_close(unlabeled["loss"], 0.25 * kd)


def test_distillation_under_bf16_autocast_stays_float32(teacher_ckpt):
    objective = Distillation(str(teacher_ckpt))
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    reference = objective(student(images), targets, images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = student(images)
        terms = objective(logits, targets, images)
    assert logits.dtype == torch.bfloat16 and terms["kd"].dtype == torch.float32
    assert torch.isfinite(terms["loss"])
    torch.testing.assert_close(terms["kd"], reference["kd"], rtol=0.05, atol=0.05)


# --- the teacher --------------------------------------------------------------------------------


def test_teacher_stays_frozen_out_of_the_optimizer_and_the_checkpoint(teacher_ckpt, tmp_path):
    objective = Distillation(str(teacher_ckpt), temperature=4.0, alpha=0.9)
    teacher = objective.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert any("running_mean" in k for k in before)  # BatchNorm statistics are part of the comparison
    student = ImageClassifier("resnet20", num_classes=10, objective=objective)  # another family and stem
    student.train()  # a blanket .train() must not reach the teacher's BatchNorm
    assert not teacher.training
    trainer = quiet_trainer(tmp_path, max_steps=3)
    trainer.fit(student, random_loader(24))
    assert trainer.global_step == 3
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}

    path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert state and all(k.startswith("backbone.") for k in state), [k for k in state if not k.startswith("backbone.")]
    restored = ImageClassifier.load_from_checkpoint(path)  # no teacher needed to load the student
    assert isinstance(restored.objective, CrossEntropy)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(restored.eval()(x), student.eval()(x))


def test_teacher_top1_and_agreement_each_validation_epoch(teacher_ckpt, tmp_path):
    objective = Distillation(str(teacher_ckpt))
    calls = []
    objective.teacher.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    student = ImageClassifier("cnn", num_classes=10, backbone_kwargs=TINY_CNN, objective=objective)
    val_x, val_y = random_data(24, seed=1)
    recorder = Recorder()
    trainer = quiet_trainer(tmp_path, logger=recorder, max_epochs=2, limit_train_batches=2)
    trainer.fit(student, random_loader(16), DataLoader(TensorDataset(val_x, val_y), batch_size=8))

    teacher_pred = objective.teacher(val_x).argmax(1)
    teacher_top1 = recorder.values("val/teacher_top1")
    assert [s for s, _ in teacher_top1] == [1, 3]  # the first validation already says what the teacher scores
    assert teacher_top1[0][1] == pytest.approx((teacher_pred == val_y).float().mean().item())
    agreement = recorder.values("val/agreement")
    assert [s for s, _ in agreement] == [1, 3]  # once per validation epoch
    with torch.no_grad():
        expected = (student.eval()(val_x).argmax(1) == teacher_pred).float().mean().item()
    assert agreement[-1][1] == pytest.approx(expected)
    # 2 epochs x 2 training batches of 8, and the 24 validation images once: later epochs reuse them.
    calls.pop()  # the hand computation above
    assert sum(calls) == 2 * 2 * 8 + 24


def test_unlabeled_stream_adds_kd_only(teacher_ckpt):
    objective = Distillation(str(teacher_ckpt), alpha=0.5)
    model = ImageClassifier("cnn", num_classes=10, backbone_kwargs=TINY_CNN, objective=objective).eval()
    (x, y), x_u = random_data(4), torch.randn(6, 3, 32, 32)
    with warnings.catch_warnings():  # no Trainer attached: Lightning warns that logging is skipped
        warnings.simplefilter("ignore")
        loss = model.training_step(TwoStreamBatch((x, y), x_u), 0)
    student, teacher = model.backbone, objective.teacher
    expected = (
        0.5 * F.cross_entropy(student(x), y)
        + 0.5 * distillation_kl(student(x), teacher(x), 4.0)
        + 0.5 * distillation_kl(student(x_u), teacher(x_u), 4.0)
    )
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="use the Distillation objective"):
        CrossEntropy().unlabeled(student(x_u), x_u)


# --- auxiliary heads ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, bad, good, expected",
    [
        ("temperature", "0", "2.5", 2.5),
        ("temperature", "-2.0", "1", 1.0),
        ("alpha", "1.5", "1", 1.0),
        ("alpha", "-0.1", "0", 0.0),
        ("label_smoothing", "1.0", "0.1", 0.1),
    ],
)
def test_the_parser_checks_each_setting_against_its_type(option, bad, good, expected):
    check_option_type(Distillation, option, bad, good, expected, "--teacher", "teacher.ckpt")
