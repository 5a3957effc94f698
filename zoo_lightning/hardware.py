"""What the machine can do fast, for choices that must follow the hardware rather than assume it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

__all__ = ["cpu_flags", "cpu_has_bf16", "auto_precision", "Precision"]

# What --trainer.precision takes: Lightning's values (its short spellings included) and "auto".
Precision = Literal[
    "auto",
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
]

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU instructions that make bf16 matrix products fast


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is not there)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return set(line.partition(":")[2].split())


def cpu_has_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def auto_precision(accelerator: str | None) -> tuple[str, str]:
    """The precision to train at on this machine and why: bf16 autocast where the hardware computes it
    natively (a CUDA GPU that supports it, a CPU with avx512_bf16 or AMX), else 32-bit.

    On a CPU without those instructions bf16 is emulated, and was measured several times slower than
    float32; with them it was measured about twice as fast.
    """
    import torch

    accelerator = str(accelerator or "auto")
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"the GPU ({torch.cuda.get_device_name(0)}) supports bf16"
        return "32-true", f"the GPU ({torch.cuda.get_device_name(0)}) has no bf16"
    if cpu_has_bf16():
        found = ", ".join(f for f in BF16_FLAGS if f in cpu_flags())
        return "bf16-mixed", f"the CPU has bf16 instructions ({found})"
    return "32-true", "the CPU has no bf16 instructions (avx512_bf16 or AMX)"
