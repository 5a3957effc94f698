"""The GPU check: what this project does on one CUDA GPU, in one table, in under 8 minutes.

    make gpu-check                          # python -m benchmarks.gpu_check (after make data, where it can)
    python -m benchmarks.gpu_check --data-dir data/cifar10-jpeg

Rows, in the order they run:

  data          the shared CIFAR-10 copy read once (decoded and cached for the rest)
  ddp           ``fit --trainer.strategy ddp --trainer.devices 1`` starts, trains 5 steps and ends cleanly
  airbench94    ``fit --config airbench94_cifar.yaml`` on the GPU: wall time from start to exit, training time,
                test top-1, against airbench94's published 3.83 s and 94.01% on an A100 (official release;
                the JPEG copy costs about 3.5 points)
  resnet50      ResNet-50 (CIFAR stem), batch 128, ``16-mixed`` and ``bf16-mixed`` through ``Trainer.fit``:
                training images/s and peak ``torch.cuda.max_memory_allocated``; the promise is under 8 GB
  pipeline      the DevicePipeline (crop, flip, normalize) on a batch, as a share of that batch's training step
  compile       one bare training step eager and with ``torch.compile`` (bf16, channels_last), compile time apart

``--checks airbench compile`` runs those rows alone. Without a GPU it prints one line and exits 0. ``--dry-run``
runs every row on the CPU with tiny networks and data (the tests use it); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.compile_step import machine, measure_in_subprocess

BUDGET_S = 480.0  # the promise: the whole check in under 8 minutes
PUBLISHED_S = 3.83
PUBLISHED = f"airbench94 on an A100: {PUBLISHED_S} s, 94.01% (official release; this JPEG copy costs about 3.5 points)"
MEMORY_PROMISE_GB = 8.0
TINY_AIRBENCH = ("--model.backbone_kwargs", "{widths: [8, 16, 16]}")


@dataclass
class Row:
    check: str
    setting: str
    result: str
    reference: str = ""


@dataclass
class Plan:
    """What the check runs: the real sizes on a GPU, or tiny ones on the CPU for ``--dry-run``."""

    data_dir: Path
    workdir: Path
    dry: bool
    budget_s: float = BUDGET_S
    started: float = field(default_factory=time.perf_counter)
    airbench_step_ms: float | None = None  # measured by the airbench94 fit, used by the pipeline row
    resnet_step_ms: float | None = None  # measured by the ResNet-50 rows, ditto

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    @property
    def accelerator(self) -> str:
        return "cpu" if self.dry else "gpu"

    @property
    def resnet(self) -> tuple[str, int]:
        """The network and batch of the memory and compile rows."""
        return ("cnn", 8) if self.dry else ("resnet50", 128)

    @property
    def airbench_batch(self) -> int:
        return 16 if self.dry else 1024

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def cli(self, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str] | None, float]:
        """``python -m zoo_lightning ARGS`` from this checkout, its output captured; (the process or None if it ran
        past ``timeout``, its wall seconds)."""
        paths = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}  # keep the caller's paths
        command = [sys.executable, "-m", "zoo_lightning", *args]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return None, time.perf_counter() - start
        return done, time.perf_counter() - start


class FitClock(L.Callback):
    """Writes the fit's training seconds and steps, and the test's top-1, to ``path`` (JSON) as they are known.

    ``--trainer.callbacks+=benchmarks.gpu_check.FitClock --trainer.callbacks.path FILE`` on a ``fit`` command line.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = Path(path)
        self.start = 0.0
        self.found: dict[str, float] = {}

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self._now()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.found.update(train_s=self._now() - self.start, steps=trainer.global_step)
        self.path.write_text(json.dumps(self.found))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        top1 = trainer.callback_metrics.get("test/top1")
        if top1 is not None:
            self.found["test_top1"] = float(top1)
        self.path.write_text(json.dumps(self.found))


class StepClock(L.Callback):
    """Times optimizer steps ``warmup`` to ``warmup + steps`` of a fit, the device synchronized at both ends."""

    def __init__(self, warmup: int, steps: int) -> None:
        super().__init__()
        self.warmup, self.steps = warmup, steps
        self.start = self.elapsed = 0.0

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self.start = self._now()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup + self.steps:
            self.elapsed = self._now() - self.start


def _data(plan: Plan, batch_size: int, **kwargs: Any) -> Any:
    from zoo_lightning.data import CIFAR10DataModule

    return CIFAR10DataModule(data_dir=str(plan.data_dir), batch_size=batch_size, val_size=0, download=False, **kwargs)


def check_data(plan: Plan) -> list[Row]:
    start = time.perf_counter()
    data = _data(plan, 128)
    data.setup("fit")
    seconds = time.perf_counter() - start
    found = f"{len(data.train_set.images):,} training images in {seconds:.1f} s"
    return [Row("data", f"CIFAR-10 from {plan.data_dir}, first read (decoded, then cached)", found)]


def _fit_args(plan: Plan, logs: Path, *extra: str) -> list[str]:
    args = ["fit", "--config", "airbench94_cifar.yaml", "--data.data_dir", str(plan.data_dir)]
    args += ["--trainer.accelerator", plan.accelerator, "--trainer.devices", "1", "--trainer.enable_progress_bar"]
    args += ["false", "--trainer.logger.init_args.save_dir", str(logs), "--data.download", "false"]
    if plan.dry:
        args += [*TINY_AIRBENCH, "--data.batch_size", "16", "--data.eval_batch_size", "20", "--trainer.max_steps", "2"]
    return [*args, *extra]


def _failure(done: subprocess.CompletedProcess[str] | None, timeout: float) -> str:
    """The table's one line for a command that failed; its stderr's end goes to this process's stderr."""
    if done is None:
        return f"FAILED: ran past {timeout:.0f} s"
    sys.stderr.write(done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return f"FAILED: exit {done.returncode}: {lines[-1] if lines else 'no message'}"


def check_ddp(plan: Plan) -> list[Row]:
    steps = "2" if plan.dry else "5"
    extra = ("--trainer.strategy", "ddp", "--test_after_fit", "false", "--trainer.max_steps", steps)
    timeout = min(120.0, plan.left_s())
    done, seconds = plan.cli(*_fit_args(plan, plan.workdir / "ddp", *extra), timeout=timeout)
    setting = f"fit --config airbench94_cifar.yaml --trainer.strategy ddp --trainer.devices 1, {steps} steps"
    clean = done is not None and done.returncode == 0 and "Traceback" not in done.stderr
    checkpoints = list((plan.workdir / "ddp").rglob("last.ckpt"))
    if clean and checkpoints:
        step = torch.load(checkpoints[0], map_location="cpu", weights_only=True)["global_step"]
        return [Row("ddp", setting, f"ok: exit 0 in {seconds:.0f} s, last.ckpt at step {step}, no traceback")]
    return [Row("ddp", setting, _failure(done, timeout) if not clean else "FAILED: no last.ckpt written")]


def check_airbench(plan: Plan) -> list[Row]:
    clock = plan.workdir / "airbench_clock.json"
    extra = ("--trainer.callbacks+=benchmarks.gpu_check.FitClock", "--trainer.callbacks.path", str(clock))
    timeout = min(300.0, plan.left_s())
    done, wall = plan.cli(*_fit_args(plan, plan.workdir / "airbench", *extra), timeout=timeout)
    images = "tiny widths, 2 steps" if plan.dry else "all 50,000 training images"
    setting = f"fit --config airbench94_cifar.yaml (precision auto), {images}, flip_shift TTA"
    if done is None or done.returncode != 0 or not clock.is_file():
        return [Row("airbench94", setting, _failure(done, timeout), PUBLISHED)]
    found = json.loads(clock.read_text())
    plan.airbench_step_ms = 1000 * found["train_s"] / max(1, found["steps"])
    top1 = f"{100 * found['test_top1']:.2f}%" if "test_top1" in found else "no test result"
    train_s = found["train_s"]
    result = (
        f"wall {wall:.1f} s (start to exit), training {train_s:.1f} s ({train_s / PUBLISHED_S:.1f}x the published), "
        f"test top-1 {top1}"
    )
    return [Row("airbench94", setting, result, PUBLISHED)]


def check_resnet_memory(plan: Plan) -> list[Row]:
    from zoo_lightning.classifier import ImageClassifier

    name, batch = plan.resnet
    warmup, steps = (1, 2) if plan.dry else (5, 30)
    rows = []
    for precision in ("16-mixed", "bf16-mixed"):
        clock = StepClock(warmup, steps)
        if plan.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer = L.Trainer(
            accelerator=plan.accelerator,
            devices=1,
            precision=precision,
            max_steps=warmup + steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock],
        )
        trainer.fit(ImageClassifier(name, num_classes=10, channels_last=True), _data(plan, batch))
        step_ms = 1000 * clock.elapsed / steps
        if precision == "bf16-mixed":
            plan.resnet_step_ms = step_ms
        if plan.device == "cuda":
            peak_gb = torch.cuda.max_memory_allocated() / 2**30
            verdict = "ok" if peak_gb < MEMORY_PROMISE_GB else "OVER"
            memory = f"peak {peak_gb:.2f} GB allocated ({verdict}: promise < {MEMORY_PROMISE_GB:.0f} GB)"
        else:
            memory = "peak memory: GPU only"
        result = f"{batch * steps / clock.elapsed:,.0f} images/s ({step_ms:.1f} ms a step), {memory}"
        rows.append(Row(name, f"Trainer.fit, batch {batch}, {precision}, channels_last", result))
    return rows


def _pipeline_ms(plan: Plan, batch: int, **pipeline: Any) -> float:
    """Milliseconds the training augmentation (crop, flip, normalize) takes on one ``batch`` on the device."""
    from zoo_lightning.data import DevicePipeline

    data = _data(plan, batch, pipeline=DevicePipeline(**pipeline))
    data.setup("fit")  # reads the cached images and attaches the pipeline to their statistics
    images = data.train_set.images[:batch].to(plan.device)
    labels = data.train_set.labels[:batch].to(plan.device)
    synchronize: Callable[[], None] = torch.cuda.synchronize if plan.device == "cuda" else lambda: None
    reps = 3 if plan.dry else 50
    data.pipeline(images, labels, training=True, epoch=0, rank=0)
    synchronize()
    start = time.perf_counter()
    for epoch in range(reps):
        data.pipeline(images, labels, training=True, epoch=epoch, rank=0)
    synchronize()
    return 1000 * (time.perf_counter() - start) / reps


def check_pipeline(plan: Plan) -> list[Row]:
    rows = []
    airbench = {"crop_padding": 2, "padding_mode": "reflect", "alternating_flip": True}
    name, batch = plan.resnet
    for label, size, options, step_ms in (
        ("airbench94", plan.airbench_batch, airbench, plan.airbench_step_ms),
        (name, batch, {}, plan.resnet_step_ms),
    ):
        ms = _pipeline_ms(plan, size, **options)
        share = f", {100 * ms / step_ms:.1f}% of its {step_ms:.1f} ms training step" if step_ms else ""
        rows.append(Row("pipeline", f"DevicePipeline of {label}'s fit, batch {size}", f"{ms:.2f} ms a batch{share}"))
    return rows


def check_compile(plan: Plan) -> list[Row]:
    name, batch = plan.resnet
    cases = [(name, batch)] if plan.dry else [(name, batch), ("airbench94", 1024)]
    rows = []
    for model, size in cases:
        eager_ms: float | None = None
        for mode in ("eager", "default"):
            if plan.left_s() < 30:
                rows.append(Row("compile", f"{model}, batch {size}, {mode}", "skipped: the 8-minute budget is spent"))
                continue
            cell = {
                "model_name": model,
                "batch": size,
                "precision": "bf16-mixed",
                "mode": mode,
                "device": plan.device,
                "steps": 1 if plan.dry else 20,
                "warmup": 1 if plan.dry else 3,
                "backend": "eager" if plan.dry else "inductor",  # dynamo alone: the dry run checks the path only
            }
            timing = measure_in_subprocess(cell, timeout=min(240.0, plan.left_s()))
            setting = f"{model}, batch {size}, bf16-mixed, channels_last, {mode}"
            if timing is None:
                rows.append(Row("compile", setting, "FAILED (its error is above)"))
                continue
            result = f"{timing.images_per_s:,.0f} images/s ({timing.step_ms:.1f} ms a step)"
            if mode == "eager":
                eager_ms = timing.step_ms
            else:
                gain = f", {eager_ms / timing.step_ms:.2f}x eager" if eager_ms else ""
                result += f", compiled in {timing.compile_s:.0f} s{gain}"
            rows.append(Row("compile", setting, result))
    return rows


CHECKS: list[Callable[[Plan], list[Row]]] = [
    check_data,
    check_ddp,
    check_airbench,
    check_resnet_memory,
    check_pipeline,
    check_compile,
]


def table(rows: list[Row]) -> str:
    lines = ["| check | setting | result | reference |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.setting} | {r.result} | {r.reference} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/cifar10-jpeg", help="the CIFAR-10 copy (make data unpacks it)")
    parser.add_argument("--dry-run", action="store_true", help="every row on the CPU, tiny: checks the code only")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds; later rows are skipped past it")
    names = [check.__name__.removeprefix("check_") for check in CHECKS]
    parser.add_argument("--checks", nargs="+", choices=names, default=names, help="the rows to run (default: all)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: skipped, no CUDA GPU on this machine (torch.cuda.is_available() is False).")
        return 0
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"gpu-check: no CIFAR-10 at {data_dir}: run `make data` (or give --data-dir).", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        plan = Plan(data_dir, Path(workdir), args.dry_run, args.budget)
        rows: list[Row] = []
        for check in CHECKS:
            name = check.__name__.removeprefix("check_")
            if name not in args.checks:
                continue
            if plan.left_s() <= 0:
                rows.append(Row(name, "-", f"skipped: the {plan.budget_s:.0f} s budget is spent"))
                continue
            print(f"gpu-check: {name} ({plan.left_s():.0f} s of the budget left)", file=sys.stderr, flush=True)
            try:
                rows += check(plan)
            except Exception as error:  # one broken row must not hide the others
                rows.append(Row(name, "-", f"FAILED: {type(error).__name__}: {str(error).splitlines()[0]}"))
        total = time.perf_counter() - plan.started
    print(f"# GPU check{' (dry run on the CPU: the numbers mean nothing)' if args.dry_run else ''}")
    print(f"# machine: {machine()}")
    print(f"# command: python -m benchmarks.gpu_check {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# total {total:.0f} s (budget {args.budget:.0f} s)")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
