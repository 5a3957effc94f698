"""MuonSGD: Newton-Schulz orthogonalization, Muon's step on conv filters, SGD's on the rest, resume, schedules."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
from torch import nn

from tests.helpers import TinyData, check_option_type
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.optimization import parameter_groups
from zoo_lightning.optimizers import NEWTON_SCHULZ_COEFFICIENTS, MuonSGD, newton_schulz
from zoo_lightning.schedulers import TriangularLR


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def _set_grads(model: nn.Module, step: int) -> None:
    """The same gradients for the same step, whichever optimizer trains the model."""
    generator = torch.Generator().manual_seed(100 + step)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=generator)


def _quintic(value: float, steps: int) -> float:
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    for _ in range(steps):
        value = a * value + b * value**3 + c * value**5
    return value


@pytest.mark.parametrize("shape", [(64, 216), (216, 64), (48, 48)])
def test_newton_schulz_gives_singular_values_near_one_and_keeps_the_singular_vectors(shape):
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = newton_schulz(matrix, steps=5).double()
    assert result.shape == shape
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    values = torch.linalg.svdvals(result)
    assert 0.55 < values.min() and values.max() < 1.2, values  # the quintic's band, not exactly 1
    # An odd polynomial of the matrix: U f(S) V^T, so U^T result V is diagonal.
    core = u.T @ result @ vh.T
    assert torch.allclose(core, torch.diag(torch.diagonal(core)), atol=1e-4)
    # One step leaves the small singular values far below 1: the five do the work.
    assert torch.linalg.svdvals(newton_schulz(matrix, steps=1)).min() < 0.5


def test_newton_schulz_ignores_autocast():
    matrix = torch.randn(16, 40, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = newton_schulz(matrix)
    assert inside.dtype == torch.float32 and torch.equal(inside, newton_schulz(matrix))


def test_torch_muon_computes_the_same_step_only_to_bf16_precision():
    """Why MuonSGD keeps its own float32 Newton-Schulz: should ``torch.optim.Muon`` come to match it, this fails."""
    matrix = torch.randn(64, 216, generator=torch.Generator().manual_seed(2))
    param = nn.Parameter(torch.zeros(64, 216))
    param.grad = matrix
    torch.optim.Muon([param], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False, ns_steps=3).step()
    difference = (param.detach() + newton_schulz(matrix, steps=3)).abs().max().item()
    assert 1e-4 < difference < 1e-2, difference  # bf16's 8-bit mantissa, not another direction


def test_newton_schulz_in_bfloat16_is_the_float32_result_to_bf16_precision():
    matrix = torch.randn(64, 216, generator=torch.Generator().manual_seed(2))
    low = newton_schulz(matrix, steps=3, dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16
    difference = (low.float() - newton_schulz(matrix, steps=3)).abs().max().item()
    assert 1e-4 < difference < 1e-2, difference  # the same direction, to bf16's 8-bit mantissa


STEP_DTYPES = (torch.float32, torch.bfloat16)


@pytest.mark.parametrize(
    "ns_dtype, flags, expected",
    [
        ("auto", {"avx2", "fma"}, torch.float32),
        ("auto", {"avx2", "avx512_bf16"}, torch.bfloat16),
        ("auto", {"amx_bf16"}, torch.bfloat16),
        ("float32", {"avx512_bf16"}, torch.float32),
        ("bfloat16", {"avx2"}, torch.bfloat16),
    ],
)
def test_the_filters_step_computes_newton_schulz_in_the_chosen_precision(monkeypatch, ns_dtype, flags, expected):
    """``auto``: bf16 on a CPU with bf16 instructions, float32 on one without (where bf16 products are emulated)."""
    monkeypatch.setattr("zoo_lightning.hardware.cpu_flags", lambda: flags)
    grad = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    param = nn.Parameter(torch.zeros(8, 4, 3, 3))
    param.grad = grad.clone()
    MuonSGD([param], muon_lr=1.0, muon_momentum=0.5, nesterov=False, ns_dtype=ns_dtype).step()
    # The first step's direction is the gradient itself; the filters move by minus its orthogonalization.
    step = {dtype: newton_schulz(grad.reshape(8, -1), dtype=dtype).float().view_as(param) for dtype in STEP_DTYPES}
    assert not torch.equal(step[torch.float32], step[torch.bfloat16])  # the two precisions are told apart
    assert torch.equal(param.detach(), -step[expected])


def test_parameters_are_split_into_muon_filters_and_sgd_rest_with_their_names():
    model = _net()
    groups = parameter_groups(model)
    groups[0]["name"] = "backbone"
    optimizer = MuonSGD(groups, lr=0.1, weight_decay=5e-4, muon_lr=0.02)
    conv, bn, linear = model[0], model[1], model[5]
    by_name = {g.get("name"): g for g in optimizer.param_groups}
    ids = lambda group: [id(p) for p in group["params"]]  # noqa: E731 (tensors compare by value, not identity)
    # The decayed group lost its conv filter to a Muon part of its own; the other groups have no filters, no Muon part.
    assert ids(by_name["backbone"]) == [id(linear.weight)] and not by_name["backbone"]["muon"]
    assert ids(by_name["backbone_muon"]) == [id(conv.weight)] and by_name["backbone_muon"]["muon"]
    assert by_name["backbone_muon"]["lr"] == 0.02 and by_name["backbone_muon"]["weight_decay"] == 0.0
    assert by_name["backbone"]["lr"] == 0.1 and by_name["backbone"]["weight_decay"] == 5e-4
    norms, biases = [g for g in optimizer.param_groups if g.get("name") is None]
    assert ids(norms) == [id(bn.weight), id(bn.bias)] and norms["weight_decay"] == 0.0 and not norms["muon"]
    assert ids(biases) == [id(conv.bias), id(linear.bias)] and biases["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_sgd_routed_parameters_follow_torch_sgd_exactly():
    model, reference = _net(), _net()
    kwargs = {"lr": 0.3, "momentum": 0.85, "nesterov": True, "weight_decay": 1e-2}
    optimizer = MuonSGD(parameter_groups(model), muon_lr=0.1, **kwargs)
    sgd = torch.optim.SGD(parameter_groups(reference), **kwargs)
    for step in range(4):
        _set_grads(model, step)
        _set_grads(reference, step)
        optimizer.step()
        sgd.step()
    for (name, param), expected in zip(model.named_parameters(), reference.parameters()):
        if param.ndim == 4:
            assert not torch.equal(param, expected), name  # Muon's step, not SGD's
        else:
            assert torch.equal(param, expected), name


def _hand_muon(out: int, weight: list[float], grads: list[list[float]], lr: float, momentum: float) -> list[float]:
    """Nesterov Muon steps with weight normalization on filter banks whose out x in matrices are diagonal (given by
    their diagonals): each singular value goes through the quintic by itself."""
    buffer = [0.0] * len(weight)
    for grad in grads:
        buffer = [momentum * b + g for b, g in zip(buffer, grad)]
        direction = [g + momentum * b for g, b in zip(grad, buffer)]
        scale = math.sqrt(out) / math.sqrt(sum(w * w for w in weight))
        norm = math.sqrt(sum(d * d for d in direction)) + 1e-7
        weight = [w * scale - lr * math.copysign(_quintic(abs(d) / norm, 5), d) for w, d in zip(weight, direction)]
    return weight


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (3, 2, 1, 1)])  # wide and tall out x in*k*k
def test_a_muon_step_on_a_conv_filter_equals_the_hand_computation(shape):
    out, inner = shape[0], shape[1]

    def bank(diagonal: list[float]) -> torch.Tensor:
        matrix = torch.zeros(out, inner)
        matrix[range(2), range(2)] = torch.tensor(diagonal)
        return matrix.view(shape)

    weight, grads = [1.0, 2.0], [[3.0, -4.0], [0.5, 2.0]]
    param = nn.Parameter(bank(weight))
    optimizer = MuonSGD([param], muon_lr=0.1, muon_momentum=0.6, nesterov=True, normalize_filters=True)
    for grad in grads:
        param.grad = bank(grad)
        optimizer.step()
    assert torch.allclose(param.detach(), bank(_hand_muon(out, weight, grads, 0.1, 0.6)), atol=1e-5)


def test_the_state_dict_round_trip_resumes_identically():
    model = _net()
    optimizer = MuonSGD(parameter_groups(model), lr=0.2, momentum=0.85, weight_decay=1e-3, muon_lr=0.1, ns_steps=3)
    scheduler = TriangularLR(optimizer, total_steps=6)
    for step in range(3):
        _set_grads(model, step)
        optimizer.step()
        scheduler.step()
    saved_model, saved = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    saved_scheduler = scheduler.state_dict()
    for step in range(3, 6):
        _set_grads(model, step)
        optimizer.step()
        scheduler.step()

    resumed = _net()
    resumed.load_state_dict(saved_model)
    # Built with other settings, as a changed config would be: the checkpoint's values win, as for torch's SGD.
    again = MuonSGD(parameter_groups(resumed), lr=9.0, muon_lr=9.0)
    again_scheduler = TriangularLR(again, total_steps=6)
    again.load_state_dict(saved)
    again_scheduler.load_state_dict(saved_scheduler)
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in saved["param_groups"]]
    for step in range(3, 6):
        _set_grads(resumed, step)
        again.step()
        again_scheduler.step()
    for (name, param), expected in zip(resumed.named_parameters(), model.parameters()):
        assert torch.equal(param, expected), name


def test_the_lr_schedule_scales_both_parts():
    model = _net()
    optimizer = MuonSGD(parameter_groups(model), lr=0.5, muon_lr=0.2)
    scheduler = TriangularLR(optimizer, total_steps=10, start_factor=0.2, peak_fraction=0.5, end_factor=0.0)
    for step in range(10):
        factor = scheduler.factor(step)
        lrs = {bool(g["muon"]): g["lr"] for g in optimizer.param_groups}
        assert lrs == {False: pytest.approx(0.5 * factor), True: pytest.approx(0.2 * factor)}
        _set_grads(model, step)
        optimizer.step()
        scheduler.step()
    # The filters' step is lr x an update of spectral norm about 1: at factor 0 they stay put.
    before = model[0].weight.detach().clone()
    _set_grads(model, 10)
    optimizer.step()
    assert scheduler.factor(10) == 0 and torch.equal(model[0].weight, before)


def test_the_classifier_trains_with_it_through_lightning_with_lr_scales_and_the_schedule(tmp_path):
    """Lightning's closure runs the forward and backward; norm_lr_scale and the schedule reach both parts."""
    model = ImageClassifier(
        "cnn",
        num_classes=3,
        optimizer=lambda params: MuonSGD(params, lr=0.1, muon_lr=0.05, ns_steps=3, normalize_filters=True),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step)),
        norm_lr_scale=4.0,
    )
    conv = next(p for p in model.backbone.parameters() if p.ndim == 4)
    before = conv.detach().clone()
    trainer = L.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, TinyData(batch_size=16))
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, MuonSGD)
    # Each group's SGD part, then its Muon part: decayed weights (the head), filters, norms, other biases. After 3
    # steps the factor is 1/4: 0.1, the filters' 0.05, the norms' 4 x 0.1 and 0.1, each divided by 4.
    assert [g["muon"] for g in optimizer.param_groups] == [False, True, False, False]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1 / 4, 0.05 / 4, 0.4 / 4, 0.1 / 4])
    # normalize_filters: every trained filter bank has the norm sqrt(out) it was set to, less one step of 0.05/3.
    assert not torch.equal(conv, before)
    for param in model.backbone.parameters():
        if param.ndim == 4 and param.requires_grad:
            assert abs(param.norm().item() - math.sqrt(param.shape[0])) < 0.05 * math.sqrt(param.shape[0])


@pytest.mark.parametrize(
    "option, bad, good, expected",
    [
        ("muon_lr", "0", "0.24", 0.24),
        ("muon_momentum", "1", "0.6", 0.6),
        ("ns_steps", "0", "3", 3),
        ("weight_decay", "-0.001", "2e-3", 2e-3),
        ("ns_dtype", "float16", "bfloat16", "bfloat16"),
    ],
)
def test_the_parser_checks_each_option_against_its_type(option, bad, good, expected):
    check_option_type(MuonSGD, option, bad, good, expected, skip=("params",))


def test_nesterov_without_momentum_is_refused_in_one_line():
    with pytest.raises(ValueError, match="nesterov needs momentum and muon_momentum above 0"):
        MuonSGD([nn.Parameter(torch.zeros(2, 2, 1, 1))], muon_momentum=0.0)


def test_an_lr_set_in_the_param_groups_sets_the_filters_step():
    """What a scheduler does: the LR written into the Muon part's group is the size of the next filter step."""
    steps = []
    for factor in (1.0, 0.25):
        model = _net()
        optimizer = MuonSGD(parameter_groups(model), lr=0.1, muon_lr=0.2, ns_steps=3)
        _set_grads(model, 0)
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] *= factor
        before = model[0].weight.detach().clone()
        _set_grads(model, 1)
        optimizer.step()
        steps.append(model[0].weight.detach() - before)
    # The same momentum and direction, a quarter of the LR: a quarter of the step.
    assert steps[1].abs().max() > 0 and torch.allclose(steps[1], 0.25 * steps[0], rtol=1e-5, atol=1e-7)
