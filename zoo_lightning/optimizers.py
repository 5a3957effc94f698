"""Optimizers of our own: :class:`MuonSGD`, Muon on the conv filters and Nesterov SGD on the rest, as one optimizer.

Muon (Jordan et al., 2024) replaces a matrix's momentum update by the nearest semi-orthogonal matrix, found by a
few Newton-Schulz iterations (:func:`newton_schulz`), so every direction of the filter bank moves at the same rate.
airbench94_muon trains CIFAR-10's conv filters with it and the biases, norms and the linear head with Nesterov SGD.
``torch.optim.Muon`` is not used for the filters: its Newton-Schulz runs in bfloat16 on every device, which moves
airbench94_muon's filter steps by up to 3e-3 from float32's and, on a CPU without bf16 instructions, is slower.
Here ``ns_dtype`` chooses: float32, bfloat16, or ``auto`` (bfloat16 where the hardware computes it natively).

One optimizer object holds both parts, so what Lightning does for any optimizer keeps working: automatic
optimization with its closure, one LR schedule over every group, gradient clipping and accumulation, the LR
monitor, and a checkpoint that resumes. Lightning's manual optimization would have put two optimizers, two
schedules and the backward call into the module, for every recipe, to serve this one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.sgd import sgd

from zoo_lightning.hardware import cpu_has_bf16
from zoo_lightning.options import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt

__all__ = ["MuonSGD", "newton_schulz", "NEWTON_SCHULZ_COEFFICIENTS"]

# The quintic a*x + b*x^3 + c*x^5 that Muon and airbench apply to each singular value: steep at zero, so few steps
# lift small singular values, ending in roughly [0.7, 1.2] rather than exactly 1 (which, Muon's authors found, trains
# as well).
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix: Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.float32) -> Tensor:
    """``matrix`` (rows x columns) made nearly semi-orthogonal: ``U S' V^T`` for its SVD ``U S V^T``, S' near 1.

    Computed in ``dtype`` with autocast off, whatever the surrounding precision: a CPU without bf16 instructions
    computes bf16 products many times slower than float32 ones, so bfloat16 is a choice made for the hardware.

    Args:
        matrix: a 2-D tensor.
        steps: iterations of the quintic; each multiplies a small singular value by about 3.4.
        eps: keeps the normalization finite for a zero matrix.
        dtype: the products' precision; the result has it too.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    with torch.autocast(matrix.device.type, enabled=False):
        x = matrix.to(dtype)
        x = x / (x.norm() + eps)  # every singular value in [0, 1], where the iteration converges
        wide = x.shape[0] <= x.shape[1]
        if not wide:  # iterate on the smaller Gram matrix
            x = x.T
        for _ in range(steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        return x if wide else x.T


class MuonSGD(Optimizer):
    """Muon on every 4-D parameter (conv filters), Nesterov SGD (``torch.optim.SGD``'s update) on the others.

    Each parameter group given is split in two: its conv filters, trained by Muon at ``muon_lr`` and
    ``muon_momentum`` without weight decay, and the rest, trained as ``torch.optim.SGD`` trains them with the
    group's own ``lr``, ``momentum`` and ``weight_decay`` or the defaults below. Other keys of a group (``name``,
    ``lr_scale``) go to both parts, the Muon part's name ending in ``_muon``; parts without parameters are left
    out. An LR schedule scales every group alike, so both parts follow it.

    A Muon step on a filter bank ``W`` (out x in x k x k) with gradient ``G``: the momentum buffer
    ``B = muon_momentum * B + G``; the update direction ``U = G + muon_momentum * B`` (Nesterov) or ``B``;
    with ``normalize_filters``, ``W`` is first rescaled to the Frobenius norm sqrt(out); then
    ``W -= muon_lr * newton_schulz(U as out x in*k*k)``. The step's size does not depend on the gradient's
    scale, so ``muon_lr`` means the same for a summed or a mean loss.

    Args:
        params: parameters or parameter groups (the classifier's :func:`~zoo_lightning.optimization.optimizer_groups`).
        lr: the SGD part's learning rate.
        momentum: the SGD part's momentum.
        nesterov: Nesterov momentum, in both parts.
        weight_decay: the SGD part's L2 penalty (as ``torch.optim.SGD``'s); groups may set their own.
        muon_lr: the filters' learning rate: the step of each filter bank, in spectral norm.
        muon_momentum: the filters' momentum.
        ns_steps: Newton-Schulz iterations per filter bank and step (airbench94_muon: 3).
        normalize_filters: rescale each filter bank to Frobenius norm sqrt(out channels) before its step, as
            airbench94_muon does; the filters' scale then stays fixed (BatchNorm follows each conv).
        ns_dtype: the Newton-Schulz products' precision: ``float32``; ``bfloat16`` (airbench's and
            ``torch.optim.Muon``'s); ``auto``, bfloat16 on a CUDA GPU or a CPU with bf16 instructions (avx512_bf16
            or AMX), where it runs the products about 2.5x faster, else float32.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: PositiveFloat = 0.1,
        momentum: Fraction = 0.9,
        nesterov: bool = True,
        weight_decay: NonNegativeFloat = 0.0,
        muon_lr: PositiveFloat = 0.02,
        muon_momentum: Fraction = 0.95,
        ns_steps: PositiveInt = 5,
        normalize_filters: bool = False,
        ns_dtype: Literal["float32", "bfloat16", "auto"] = "float32",
    ) -> None:
        # Kept by hand: a relation between options, which their types cannot state.
        if nesterov and (momentum == 0 or muon_momentum == 0):
            raise ValueError(
                "MuonSGD's nesterov needs momentum and muon_momentum above 0: set both, or --model.optimizer."
                "init_args.nesterov false."
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "muon": False,
            "ns_steps": ns_steps,
            "normalize_filters": normalize_filters,
            "ns_dtype": ns_dtype,
        }
        super().__init__(_split_filters(params, muon_lr, muon_momentum), defaults)
        # ``auto`` resolved once per device: it reads the CPU's flags, which a step should not do again.
        self._ns_dtypes: dict[tuple[str, torch.device], torch.dtype] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step of every group; ``closure`` (Lightning's forward and backward) runs first when given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._sgd_step(group)
        return loss

    def _sgd_step(self, group: dict[str, Any]) -> None:
        """``torch.optim.SGD``'s update, through its public functional form."""
        params = [p for p in group["params"] if p.grad is not None]
        buffers: list[Tensor | None] = [self.state[p].get("momentum_buffer") for p in params]
        sgd(
            params,
            [p.grad for p in params],
            buffers,
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=0.0,
            nesterov=group["nesterov"],
            maximize=False,
        )
        if group["momentum"] != 0:
            for param, buffer in zip(params, buffers):
                self.state[param]["momentum_buffer"] = buffer

    def _muon_step(self, group: dict[str, Any]) -> None:
        momentum = group["momentum"]
        key = (group["ns_dtype"], group["params"][0].device)
        if key not in self._ns_dtypes:
            self._ns_dtypes[key] = _newton_schulz_dtype(*key)
        dtype = self._ns_dtypes[key]
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.clone()  # a zero buffer after its first update
            else:
                state["momentum_buffer"].mul_(momentum).add_(grad)
            buffer = state["momentum_buffer"]
            direction = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
            if group["normalize_filters"]:
                param.mul_(math.sqrt(param.shape[0]) / param.norm().clamp_min(1e-12))
            update = newton_schulz(direction.reshape(param.shape[0], -1), group["ns_steps"], dtype=dtype)
            param.add_(update.view_as(param).to(param.dtype), alpha=-group["lr"])


def _newton_schulz_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if choice == "bfloat16" else torch.float32


def _split_filters(
    params: Iterable[Tensor] | Iterable[dict[str, Any]], muon_lr: float, muon_momentum: float
) -> list[dict[str, Any]]:
    """Each group as its SGD part, then its Muon part (the 4-D parameters); empty parts left out."""
    given = list(params)
    groups = cast(list[dict[str, Any]], given if given and isinstance(given[0], dict) else [{"params": given}])
    split = []
    for group in groups:
        members = list(group["params"])
        rest = {**group, "params": [p for p in members if p.ndim != 4]}
        filters = {
            **group,
            "params": [p for p in members if p.ndim == 4],
            "muon": True,
            "lr": muon_lr,
            "momentum": muon_momentum,
            "weight_decay": 0.0,
        }
        if "name" in group:
            filters["name"] = f"{group['name']}_muon"
        split += [part for part in (rest, filters) if part["params"]]
    if not split:
        raise ValueError("MuonSGD got no parameters to train.")
    return split
