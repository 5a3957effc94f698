"""Precision auto: bf16 where the CPU (or GPU) computes it natively, 32-bit elsewhere."""

import pytest

from zoo_lightning import hardware


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx2", "avx512_bf16"}, "bf16-mixed"),
        ({"amx_bf16"}, "bf16-mixed"),
        ({"avx2", "avx512f"}, "32-true"),
        (set(), "32-true"),
    ],
)
def test_auto_precision_follows_the_cpu_flags(flags, expected, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    precision, why = hardware.auto_precision("auto")
    assert precision == expected and ("bf16 instructions" in why)


def test_the_flags_are_read_from_proc_cpuinfo():
    flags = hardware.cpu_flags()
    text = open("/proc/cpuinfo").read()
    assert flags and all(f in text for f in list(flags)[:5])
