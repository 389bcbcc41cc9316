"""Which arithmetic a backbone runs in: ``fp32``, ``bf16`` autocast, or ``auto`` (the default).

``auto`` is bf16 only where the hardware does bf16 natively, fp32 elsewhere:

* a CUDA GPU that supports bf16 (Ampere and later): bf16;
* a CPU with AMX-BF16 or AVX512-BF16 (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and
  later) or Arm's BF16 extension, as listed in ``/proc/cpuinfo``: bf16;
* anything else (an AVX2-only CPU, Apple MPS, a CPU whose flags cannot be read): fp32. There bf16
  is emulated: measured 4.5x *slower* than fp32 for AST on an AVX2-only EPYC (docs/benchmarks.md).

The environment variable ``HUMWATCH_BF16`` (``1`` / ``0``) overrides the detection, for a machine
whose flags mislead it (and for tests that must give the same numbers on every machine).

:func:`resolve_precision` is called in one place, :func:`humwatch.models.create_backbone`, so a
backbone's ``precision`` is always the resolved one, and that is what caches key on and what runs
and monitors record.
"""

from __future__ import annotations

import os

from humwatch.errors import ConfigError

PRECISIONS = ("fp32", "bf16")
"""What a built backbone runs in: fp32, or bf16 autocast (CPU or CUDA); embeddings are float32 either way."""
PRECISION_CHOICES = ("auto", *PRECISIONS)
"""What ``--precision`` and the ``precision`` setting take."""
ENV = "HUMWATCH_BF16"


def native_bf16(device: str = "cpu") -> bool:
    """True when ``device`` (a resolved device: ``cpu``, ``cuda[:N]``, ``mps``) does bf16 in hardware."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    kind = str(device or "cpu").split(":")[0]
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if kind == "cpu":
        from humwatch.runinfo import cpu_bf16_flags

        return bool(cpu_bf16_flags())
    return False


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``auto`` -> ``bf16`` or ``fp32`` for ``device`` (see the module docstring); ``fp32`` and
    ``bf16`` are returned as they are; anything else is a one-line ConfigError."""
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"unknown precision {precision!r} (choose from {', '.join(PRECISION_CHOICES)})")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision
