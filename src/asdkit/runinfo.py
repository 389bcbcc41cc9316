"""What a result was computed on: versions and machine, recorded in every run's outputs."""

from __future__ import annotations

import os
import platform
from importlib import metadata

_PACKAGES = ("numpy", "scipy", "scikit-learn", "librosa", "soundfile", "torch", "torchvision", "timm", "transformers")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Versions of asdkit and the libraries behind its numbers, and the machine."""
    from asdkit import __version__

    versions = {"asdkit": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
        },
    }
