"""What a result was computed on: versions and machine, recorded in every run's outputs."""

from __future__ import annotations

import os
import platform
from importlib import metadata

_PACKAGES = ("numpy", "scipy", "scikit-learn", "librosa", "soundfile", "torch", "torchvision", "timm", "transformers")


BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
"""CPU flags (``/proc/cpuinfo``) that mean bf16 arithmetic in hardware: Intel AMX-BF16, AVX512-BF16
(Intel since Cooper Lake, AMD since Zen 4) and Arm's BF16 extension (``Features: ... bf16``)."""


def _cpuinfo_field(*names: str) -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in names:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    return set(_cpuinfo_field("flags", "Features").split())


def cpu_bf16_flags() -> list[str]:
    """Which of :data:`BF16_FLAGS` this CPU has (none: bf16 would be emulated, slower than fp32)."""
    flags = cpu_flags()
    return [f for f in BF16_FLAGS if f in flags]


def environment() -> dict:
    """Versions of humwatch and the libraries behind its numbers, and the machine."""
    from humwatch._version import __version__

    versions = {"humwatch": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpu_bf16": cpu_bf16_flags(), "cores": os.cpu_count()},
    }
