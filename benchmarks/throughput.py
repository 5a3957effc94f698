"""Training throughput: our full ``fit`` loop against the bare model step and today's usual pipelines.

    make bench                                    # cnn and resnet20 (and resnet18), batch 128, 2 threads;
                                                  # then airbench94 at batch 1024 in fp32 and bf16
    python -m benchmarks.throughput --models cnn --steps 30
    python -m benchmarks.throughput --models airbench94 --batch 1024 --precisions 32-true bf16-mixed --modes bare fit

Columns, all training images/s at the same model and batch:
  bare    forward + backward + SGD step on tensors already in memory (the ceiling)
  fit     our ``Trainer.fit`` loop: in-memory uint8 batches, on-device crop/flip/normalize, logging
  tv      what users write today: torchvision per-image PIL transforms through a DataLoader with
          2 workers, feeding a plain LightningModule
  seed    the seed notebooks' loop: per-image ToTensor + Normalize, num_workers=0, ``.item()`` every step
  bf16    (only with ``--modes ... bf16``) the bare step under CPU bf16 autocast
With ``--precisions``, bare and fit run once per precision (``bf16-mixed``: the bare step under
autocast, the fit with ``Trainer(precision="bf16-mixed")``).
Each cell runs in its own subprocess so peak RSS is that cell's alone. Numbers, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

DATA_DIR = Path("data")
BATCH = int(os.environ.get("BENCH_BATCH", "128"))  # set by --batch for the cells' subprocesses
PRECISION = os.environ.get("BENCH_PRECISION", "32-true")


def _threads() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _images(n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _backbone(name: str, channels_last: bool) -> torch.nn.Module:
    from zoo_lightning.models import create_model

    model = create_model(name, num_classes=10)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def bench_bare(name: str, steps: int, warmup: int, channels_last: bool) -> dict:
    if PRECISION == "bf16-mixed":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _bare(name, steps, warmup, channels_last)
    return _bare(name, steps, warmup, channels_last)


def _bare(name: str, steps: int, warmup: int, channels_last: bool) -> dict:
    model = _backbone(name, channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x, y = _images(BATCH)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    train = steps * BATCH / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
    return {"img_s": train, "eval_img_s": steps * BATCH / (time.perf_counter() - start)}


class _StepTimer:
    """Times optimizer steps ``warmup`` .. ``warmup + steps`` of a fit, data loading included."""

    def __init__(self, warmup: int, steps: int) -> None:
        import lightning as L

        outer = self

        class Timer(L.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if trainer.global_step == warmup:
                    outer.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                if trainer.global_step == warmup + steps:
                    outer.elapsed = time.perf_counter() - outer.start

        self.callback = Timer()
        self.start = self.elapsed = 0.0


def _fit_trainer(tmp: str, steps: int, warmup: int, timer: _StepTimer, **kwargs):
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(tmp, name="bench"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer.callback],
        precision=PRECISION,
        **kwargs,
    )


def bench_fit(name: str, steps: int, warmup: int, channels_last: bool) -> dict:
    import tempfile

    from zoo_lightning.classifier import ImageClassifier
    from zoo_lightning.data import CIFAR10DataModule

    data = CIFAR10DataModule(data_dir=str(DATA_DIR), batch_size=BATCH)
    model = ImageClassifier(name, num_classes=10, channels_last=channels_last)
    timer = _StepTimer(warmup, steps)
    with tempfile.TemporaryDirectory() as tmp:
        _fit_trainer(tmp, steps, warmup, timer).fit(model, data)
    eval_rate = _eval_rate(model, data, steps)
    return {"img_s": steps * BATCH / timer.elapsed, "eval_img_s": eval_rate}


def _eval_rate(model, data, steps: int) -> float:
    import lightning as L

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=steps + 2,
    )
    start = [0.0]

    class Start(L.Callback):
        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 2:
                start[0] = time.perf_counter()

    trainer.callbacks.append(Start())
    trainer.validate(model, data, verbose=False)
    return steps * BATCH / (time.perf_counter() - start[0])


def _torchvision_dataset(normalize_only: bool):
    from torchvision import datasets, transforms

    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    steps = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if not normalize_only:
        steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] + steps
    root = next(p for p in DATA_DIR.rglob("train") if p.is_dir())
    return datasets.ImageFolder(str(root), transform=transforms.Compose(steps))


def bench_tv(name: str, steps: int, warmup: int, channels_last: bool) -> dict:
    """Today's usual Lightning code: PIL transforms per image, DataLoader with 2 workers."""
    import tempfile

    import lightning as L
    from torch.utils.data import DataLoader

    class PlainModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _backbone(name, channels_last)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    loader = DataLoader(
        _torchvision_dataset(False), batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True
    )
    timer = _StepTimer(warmup, steps)
    with tempfile.TemporaryDirectory() as tmp:
        _fit_trainer(tmp, steps, warmup, timer).fit(PlainModule(), loader)
    return {"img_s": steps * BATCH / timer.elapsed}


def bench_seed(name: str, steps: int, warmup: int, channels_last: bool) -> dict:
    """The seed notebooks' loop: per-image ToTensor + Normalize in the main process, .item() each step."""
    from torch.utils.data import DataLoader

    model = _backbone(name, channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(_torchvision_dataset(True), batch_size=BATCH, shuffle=True, num_workers=0)
    running = 0.0
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + steps:
            break
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()
    return {"img_s": steps * BATCH / (time.perf_counter() - start)}


def bench_bf16(name: str, steps: int, warmup: int, channels_last: bool) -> dict:
    """The bare step under CPU bf16 autocast, what ``--trainer.precision bf16-mixed`` does to the model."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return _bare(name, steps, warmup, channels_last)


MODES = {"bare": bench_bare, "fit": bench_fit, "tv": bench_tv, "seed": bench_seed, "bf16": bench_bf16}
DEFAULT_MODES = ["bare", "fit", "tv", "seed"]  # bf16 on request: about 10x slower on CPUs without bf16 units


def run_one(args: argparse.Namespace) -> None:
    _threads()
    torch.manual_seed(0)
    result = MODES[args.one](args.model, args.steps, args.warmup, args.channels_last)
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result))


def _cell(mode: str, model: str, steps: int, warmup: int, channels_last: bool, batch: int, precision: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        "--one",
        mode,
        "--model",
        model,
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
    ] + (["--channels-last"] if channels_last else [])
    env = {**os.environ, "BENCH_BATCH": str(batch), "BENCH_PRECISION": precision}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet20", "resnet18"])
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES))
    parser.add_argument("--steps", type=int, default=0, help="timed steps per cell (0: per-model default)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--precisions", nargs="+", default=["32-true"], choices=["32-true", "bf16-mixed"])
    parser.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"], choices=["nchw", "channels_last"])
    parser.add_argument("--channels-last", action="store_true", help="(--one only)")
    parser.add_argument("--one", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return run_one(args)

    default_steps = {"cnn": 60, "resnet20": 20, "resnet18": 3, "airbench94": 6}
    from zoo_lightning.hardware import cpu_flags

    bf16 = sorted(f for f in cpu_flags() if "bf16" in f) or ["none"]
    print(f"# Training throughput, batch {args.batch}, {os.environ.get('OMP_NUM_THREADS', '2')} threads")
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, bf16 instructions: "
        f"{', '.join(bf16)}; torch {torch.__version__}; command: {' '.join(sys.argv)}"
    )
    extra = ["bf16/bare"] if "bf16" in args.modes else []
    header = [
        "model",
        "channels_last",
        "precision",
        *[f"{m} img/s" for m in args.modes],
        "fit/bare",
        "fit/tv",
        "fit/seed",
        *extra,
        "eval img/s (fit)",
        "peak RSS MB (fit)",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model in args.models:
        steps = args.steps or default_steps.get(model, 10)
        for channels_last, precision in [(c == "channels_last", p) for c in args.layouts for p in args.precisions]:
            cells = {m: _cell(m, model, steps, args.warmup, channels_last, args.batch, precision) for m in args.modes}
            rate = {m: cells[m].get("img_s", float("nan")) for m in args.modes}

            def ratio(a: str, b: str, rate: dict[str, float] = rate) -> str:
                return f"{rate[a] / rate[b]:.2f}" if a in rate and b in rate else "-"

            fit = cells.get("fit", {})
            row = [
                model,
                str(channels_last),
                precision,
                *[f"{rate[m]:.0f}" for m in args.modes],
                ratio("fit", "bare"),
                ratio("fit", "tv"),
                ratio("fit", "seed"),
                *(ratio("bf16", "bare") for _ in extra),
                f"{fit.get('eval_img_s', float('nan')):.0f}",
                f"{fit.get('peak_rss_mb', float('nan')):.0f}",
            ]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
