"""Eager against ``torch.compile`` on one training step: forward, loss, backward and the optimizer step.

    OMP_NUM_THREADS=2 python -m benchmarks.compile_step                       # airbench94, resnet20, resnet50
    OMP_NUM_THREADS=2 python -m benchmarks.compile_step --models resnet20 --precisions bf16-mixed --steps 5

What is compiled is what ``--model.compile true`` compiles: the backbone (``nn.Module.compile``), its backward
through AOTAutograd; the loss and the optimizer step stay eager, as in a fit. Under ``bf16-mixed`` the forward and
the loss run in autocast and the backward and the step outside it, as Lightning runs them. Each cell (model, precision,
layout, mode) runs in a process of its own with an empty inductor cache, so its compile time is a cold start (a
second run of the same network would find the cache). Columns:

  img/s         steady training images per second, over ``--steps`` steps after the first ``--warmup``
  compile s     the warm-up steps' time less as many steady steps: what compiling cost
  vs eager      img/s over the eager cell's of the same model, precision and layout
  break-even    steps after which compiling has paid for itself (compile s / time saved per step)
  peak RSS MB   the cell's process (``torch.cuda.max_memory_allocated`` on a GPU, in MB)

Numbers, never assertions: run it on a machine with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from benchmarks.throughput import _backbone, _images, _peak_rss_mb, _threads

MODES = ("eager", "default", "max-autotune-no-cudagraphs")
PRECISIONS = ("32-true", "bf16-mixed")
BATCH = {"airbench94": 1024, "resnet20": 512, "resnet50": 128}  # the recipes' batches; resnet50 the GPU check's
Optimizer = Literal["sgd", "muon"]


@dataclass
class StepTiming:
    """One cell's result: steady images/s, the time of a step, the compile cost and the peak memory."""

    images_per_s: float
    step_ms: float
    compile_s: float
    peak_mb: float


def _optimizer(model: nn.Module, kind: Optimizer) -> torch.optim.Optimizer:
    from zoo_lightning.optimization import parameter_groups

    if kind == "muon":
        from zoo_lightning.optimizers import MuonSGD

        return MuonSGD(parameter_groups(model), lr=0.01, momentum=0.85, muon_lr=0.02, ns_steps=3)
    return torch.optim.SGD(parameter_groups(model), lr=0.01, momentum=0.9, nesterov=True)


def _synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else lambda: None


def time_training_step(
    model_name: str,
    batch: int,
    precision: str = "32-true",
    mode: str = "eager",
    channels_last: bool = True,
    device: str = "cpu",
    steps: int = 10,
    warmup: int = 2,
    optimizer: Optimizer = "sgd",
    backend: str = "inductor",
    image_size: int = 32,
) -> StepTiming:
    """Times ``steps`` training steps of ``model_name`` after ``warmup`` (the first of which compiles).

    Args:
        model_name: a registered backbone (CIFAR stem).
        batch: images per step (random, 10 classes).
        precision: ``32-true``, or ``bf16-mixed`` (autocast over the forward and the loss).
        mode: ``eager``, or a ``torch.compile`` mode (``default``, ``max-autotune-no-cudagraphs``, ...).
        channels_last: NHWC weights and inputs.
        device: ``cpu`` or ``cuda``.
        steps: timed steps.
        warmup: untimed first steps; their time less ``warmup`` steady steps is the compile time.
        optimizer: ``sgd`` (Nesterov) or ``muon`` (:class:`~zoo_lightning.optimizers.MuonSGD`).
        backend: the compiler (``eager`` traces with dynamo alone: a quick check that the model compiles).
        image_size: side of the random images.
    """
    target = torch.device(device)
    model = _backbone(model_name, channels_last).to(target).train()
    if mode != "eager":
        model.compile(mode=None if mode == "default" or backend != "inductor" else mode, backend=backend)
    trainer = _optimizer(model, optimizer)
    images, labels = (t.to(target) for t in _images(batch, image_size))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    synchronize = _synchronizer(target)
    autocast = precision == "bf16-mixed"
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)

    def step() -> None:
        trainer.zero_grad(set_to_none=True)
        with torch.autocast(target.type, dtype=torch.bfloat16, enabled=autocast):
            loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        trainer.step()

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    steady = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(target) / 2**20 if target.type == "cuda" else _peak_rss_mb()
    return StepTiming(batch / steady, 1000 * steady, max(0.0, first - warmup * steady), peak)


def machine() -> str:
    """The CPU model and its bf16/AMX flags (and the GPU, if any), the threads, torch's version."""
    from zoo_lightning.hardware import cpu_flags

    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx")) or ["none"]
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    return (
        f"{model}, {os.cpu_count()} cores, bf16/AMX flags: {' '.join(flags)}{gpu}; {threads} threads; "
        f"torch {torch.__version__}"
    )


def measure_in_subprocess(cell: dict[str, object], timeout: float | None = None) -> StepTiming | None:
    """:func:`time_training_step` with ``cell`` as its arguments, in a fresh process with an empty inductor cache;
    None (and the process's error on stderr) if it failed or ran past ``timeout`` seconds."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        command = [sys.executable, "-m", "benchmarks.compile_step", "--cell", json.dumps(cell)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"{cell} ran past {timeout:.0f} s\n")
            return None
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return StepTiming(**json.loads(line[len("RESULT ") :]))
    sys.stderr.write(f"{cell} failed:\n{done.stderr[-3000:]}\n")
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(BATCH))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), help="eager and torch.compile modes")
    parser.add_argument("--layouts", nargs="+", default=["channels_last"], choices=["nchw", "channels_last"])
    parser.add_argument("--batch", type=int, default=0, help=f"images per step (0: each model's, {BATCH})")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (they compile)")
    parser.add_argument("--optimizer", choices=["sgd", "muon"], default="sgd")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _threads()
    if args.cell:
        print("RESULT " + json.dumps(asdict(time_training_step(**json.loads(args.cell)))), flush=True)
        return

    print(f"# One training step, eager against torch.compile ({args.optimizer} optimizer, {args.steps} timed steps)")
    print(f"# machine: {machine()}")
    print(f"# command: python -m benchmarks.compile_step {' '.join(sys.argv[1:] if argv is None else argv)}")
    memory = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    header = ["model", "batch", "precision", "layout", "mode", "img/s", "step ms", "compile s", "vs eager"]
    print("| " + " | ".join([*header, "break-even steps", memory]) + " |")
    print("|" + "---|" * (len(header) + 2))
    for model in args.models:
        for precision in args.precisions:
            for layout in args.layouts:
                eager: StepTiming | None = None
                for mode in args.modes:
                    batch = args.batch or BATCH.get(model, 128)
                    cell = {
                        "model_name": model,
                        "batch": batch,
                        "precision": precision,
                        "mode": mode,
                        "channels_last": layout == "channels_last",
                        "device": args.device,
                        "steps": args.steps,
                        "warmup": args.warmup,
                        "optimizer": args.optimizer,
                    }
                    timing = measure_in_subprocess(cell)
                    eager = timing if mode == "eager" else eager
                    print(_row(model, batch, precision, layout, mode, timing, eager), flush=True)


def _row(
    model: str, batch: int, precision: str, layout: str, mode: str, timing: StepTiming | None, eager: StepTiming | None
) -> str:
    cells = [model, str(batch), precision, layout, mode]
    if timing is None:
        return "| " + " | ".join([*cells, "failed", "-", "-", "-", "-", "-"]) + " |"
    ratio = breakeven = "-"
    if eager is not None and mode != "eager":
        ratio = f"{timing.images_per_s / eager.images_per_s:.2f}"
        saved_ms = eager.step_ms - timing.step_ms
        breakeven = f"{1000 * timing.compile_s / saved_ms:.0f}" if saved_ms > 0 else "never"
    numbers = [
        f"{timing.images_per_s:.0f}",
        f"{timing.step_ms:.1f}",
        f"{timing.compile_s:.1f}" if mode != "eager" else "-",
        ratio,
        breakeven,
        f"{timing.peak_mb:.0f}",
    ]
    return "| " + " | ".join([*cells, *numbers]) + " |"


if __name__ == "__main__":
    main()
