"""Where the time of a ``fit`` step goes: torch.profiler over a few steps of our loop on real CIFAR-10.

    OMP_NUM_THREADS=2 python -m benchmarks.profile_fit --model cnn --steps 20

Prints the operators with the most self CPU time and the share of the step's wall time spent in
training_step + backward (forward, loss, train metrics, logging calls) and in the optimizer step; the
rest is the batch (gather, transfer, on-device augmentation) and Lightning's loop. Run it on an idle machine: the
shares are what matters, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.throughput import BATCH, DATA_DIR, _threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    _threads()

    import lightning as L

    from zoo_lightning.classifier import ImageClassifier
    from zoo_lightning.data import CIFAR10DataModule

    data = CIFAR10DataModule(data_dir=str(DATA_DIR), batch_size=BATCH)
    model = ImageClassifier(args.model, num_classes=10, channels_last=args.channels_last)
    profiler = profile(activities=[ProfilerActivity.CPU])
    parts: dict[str, record_function] = {}
    wall: dict[str, float] = {}

    class Parts(L.Callback):
        """Marks the step's parts so the profile can be split by them."""

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == args.warmup:
                wall["start"] = time.perf_counter()
                profiler.start()
            if profiler.profiler is not None:
                parts["model"] = record_function("part: training_step + backward")
                parts["model"].__enter__()

        def on_before_optimizer_step(self, trainer, module, optimizer):
            if "model" in parts:
                parts.pop("model").__exit__(None, None, None)
                parts["optimizer"] = record_function("part: optimizer step")
                parts["optimizer"].__enter__()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if "optimizer" in parts:
                parts.pop("optimizer").__exit__(None, None, None)
            if trainer.global_step == args.warmup + args.steps:
                profiler.stop()
                wall["seconds"] = time.perf_counter() - wall["start"]

    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=args.warmup + args.steps + 1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            default_root_dir=tmp,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Parts()],
        )
        trainer.fit(model, data)

    events = [e for e in profiler.key_averages() if not e.key.startswith("part: ")]
    total = sum(e.self_cpu_time_total for e in events)
    step_ms = wall["seconds"] / args.steps * 1000
    print(
        f"# {args.model}, channels_last={args.channels_last}, batch {BATCH}, {args.steps} steps, "
        f"{os.environ.get('OMP_NUM_THREADS', '2')} threads, torch {torch.__version__}"
    )
    print(
        f"# wall {step_ms:.0f} ms per step ({BATCH / step_ms * 1000:.0f} images/s under the profiler); "
        f"self time in operators {total / 1e3 / args.steps:.0f} ms per step"
    )
    for event in profiler.key_averages():
        if event.key.startswith("part: "):
            print(
                f"{event.key:<40} {event.cpu_time_total / 1e3 / args.steps:8.1f} ms/step "
                f"({event.cpu_time_total / 1e3 / args.steps / step_ms:5.1%} of the step's wall time)"
            )
    print("| operator | self ms/step | share of operator time | calls/step |\n|---|---|---|---|")
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]:
        print(
            f"| {event.key} | {event.self_cpu_time_total / 1e3 / args.steps:.1f} | "
            f"{event.self_cpu_time_total / total:.1%} | {event.count / args.steps:g} |"
        )


if __name__ == "__main__":
    main()
