"""CrossEntropy and AuxiliaryLoss: soft targets, auxiliary heads by hand, in training only."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import check_option_type
from tests.objectives.conftest import Recorder, quiet_trainer, random_data
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.models import register_model
from zoo_lightning.models.registry import _REGISTRY
from zoo_lightning.objectives import AuxiliaryLoss, CrossEntropy


def test_cross_entropy_accepts_soft_targets():
    logits = torch.randn(3, 4)
    soft = torch.softmax(torch.randn(3, 4), dim=1)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(CrossEntropy(label_smoothing=0.0)(logits, soft, None)["loss"], expected)


class _TwoHeads(nn.Module):
    """Linear main and auxiliary heads on 2x2-pooled pixels; the aux head only while training."""

    def __init__(self, num_classes: int = 10, stem: str = "cifar") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.main, self.aux = nn.Linear(12, num_classes), nn.Linear(12, num_classes)

    def forward(self, x):
        features = self.pool(x).flatten(1)
        return (self.main(features), self.aux(features)) if self.training else self.main(features)


@pytest.fixture
def two_heads():
    def test_objectives_two_heads(**kwargs) -> _TwoHeads:
        """A fake backbone with one auxiliary head (tests only)."""
        return _TwoHeads(**kwargs)

    register_model(test_objectives_two_heads)
    yield "test_objectives_two_heads"
    del _REGISTRY["test_objectives_two_heads"]


def test_aux_loss_by_hand():
    logits, aux2, aux1 = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    targets = torch.tensor([0, 1, 2, 3])
    terms = AuxiliaryLoss(weight=0.3, label_smoothing=0.0)((logits, aux2, aux1), targets, None)
    ce = F.cross_entropy
    torch.testing.assert_close(terms["aux"], ce(aux1, targets) + ce(aux2, targets))
    torch.testing.assert_close(terms["loss"], ce(logits, targets) + 0.3 * (ce(aux1, targets) + ce(aux2, targets)))


def test_aux_heads_count_in_training_only_with_their_weight(two_heads, tmp_path):
    model = ImageClassifier(
        two_heads, num_classes=10, objective=AuxiliaryLoss(weight=0.25, label_smoothing=0.1), lr_scheduler=None
    )
    (x, y), (val_x, val_y) = random_data(8), random_data(8, seed=1)
    with torch.no_grad():
        main, aux = model.backbone.train()(x)
        expected_train = (
            F.cross_entropy(main, y, label_smoothing=0.1) + 0.25 * F.cross_entropy(aux, y, label_smoothing=0.1)
        ).item()
    calls = []
    original = model.objective.forward
    model.objective.forward = lambda outputs, *a: calls.append(type(outputs)) or original(outputs, *a)
    recorder = Recorder()
    trainer = quiet_trainer(tmp_path, logger=recorder, max_steps=1, log_every_n_steps=1, num_sanity_val_steps=0)
    trainer.fit(
        model, DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(val_x, val_y), batch_size=8)
    )
    assert calls == [tuple]  # validation never calls the objective
    [(_, train_loss)] = recorder.values("train/loss")
    assert train_loss == pytest.approx(expected_train, rel=1e-5)
    [(_, val_loss)] = recorder.values("val/loss")  # the main head alone, no smoothing
    with torch.no_grad():
        assert val_loss == pytest.approx(F.cross_entropy(model.backbone.eval()(val_x), val_y).item(), rel=1e-5)


# --- bad input ----------------------------------------------------------------------------------


def test_aux_loss_on_a_backbone_without_heads_is_a_clear_error():
    with pytest.raises(ValueError, match="aux_logits: true.*Use CrossEntropy"):
        AuxiliaryLoss()(torch.randn(2, 5), torch.tensor([0, 1]), None)
    with pytest.raises(ValueError, match="main logits only"):  # a tuple whose heads are switched off
        AuxiliaryLoss()((torch.randn(2, 5), None, None), torch.tensor([0, 1]), None)


@pytest.mark.parametrize(
    "cls, option, bad, good, expected",
    [
        (CrossEntropy, "label_smoothing", "1.5", "0.2", 0.2),
        (CrossEntropy, "label_smoothing", "-0.1", "0", 0.0),
        (AuxiliaryLoss, "label_smoothing", "1", "0.1", 0.1),
        (AuxiliaryLoss, "weight", "-0.3", "0", 0.0),
    ],
)
def test_the_parser_checks_each_option_against_its_type(cls, option, bad, good, expected):
    check_option_type(cls, option, bad, good, expected)
