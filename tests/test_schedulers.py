import math

import pytest
import torch

from tests.helpers import check_option_type
from zoo_lightning.schedulers import TriangularLR, WarmupCosineLR


def _lrs(scheduler: WarmupCosineLR, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_then_cosine_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineLR(optimizer, total_steps=20, warmup_fraction=0.1, warmup_start_factor=0.0)
    lrs = _lrs(scheduler, 20)
    # Two warm-up steps: 0, 0.5; then cosine over the remaining 18 steps starting at 1.
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[1] == pytest.approx(0.5)
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[11] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 18)))
    assert lrs[19] == pytest.approx(0.5 * (1 + math.cos(math.pi * 17 / 18)))
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_min_lr_ratio_is_the_floor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    scheduler = WarmupCosineLR(optimizer, total_steps=10, warmup_fraction=0.0, min_lr_ratio=0.1)
    assert scheduler.factor(10) == pytest.approx(0.1)
    assert _lrs(scheduler, 1)[0] == pytest.approx(0.2)


@pytest.mark.parametrize("total_steps", [None, 0])  # what the classifier fills in from the Trainer, after parsing
def test_a_run_without_steps_is_refused(total_steps):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=f"WarmupCosineLR needs total_steps >= 1 .*, got {total_steps}"):
        WarmupCosineLR(optimizer, total_steps=total_steps)


@pytest.mark.parametrize(
    "cls, option, bad, good, expected",
    [
        (WarmupCosineLR, "total_steps", "0", "100", 100),
        (WarmupCosineLR, "warmup_fraction", "1.0", "0", 0.0),
        (WarmupCosineLR, "warmup_start_factor", "-0.1", "0.5", 0.5),
        (WarmupCosineLR, "min_lr_ratio", "-1", "0.1", 0.1),
        (TriangularLR, "start_factor", "-0.2", "0", 0.0),
        (TriangularLR, "end_factor", "-0.07", "0.07", 0.07),
        (TriangularLR, "peak_fraction", "0", "0.23", 0.23),
        (TriangularLR, "peak_fraction", "1", "0.5", 0.5),
    ],
)
def test_the_parser_checks_each_option_against_its_type(cls, option, bad, good, expected):
    check_option_type(cls, option, bad, good, expected, skip=("optimizer",))


def test_triangular_schedule_at_the_start_the_peak_and_the_end():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    schedule = TriangularLR(optimizer, total_steps=100)
    assert schedule.factor(0) == pytest.approx(0.2) and schedule.factor(23) == pytest.approx(1.0)
    assert schedule.factor(100) == pytest.approx(0.07) and schedule.factor(150) == pytest.approx(0.07)
    assert schedule.factor(11.5) == pytest.approx(0.6)  # halfway up
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="total_steps"):
        TriangularLR(optimizer)
