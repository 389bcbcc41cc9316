"""The ``features-segments`` backbone: weight-free per-band level statistics of consecutive short
parts of a clip, laid end to end, for frame-level scoring of short faults.

A clip's log-mel spectrogram (the ``features`` backbone's frontend: dB power, 64 mels, 100 frames
per second) is cut into ``segments`` equal parts in time (20 by default: half a second each of a
10 s clip; :func:`torch.nn.functional.adaptive_avg_pool1d` sizes them, so any clip length works).
Each part gives, per mel band, its **mean level** (dB: the loudness, kept as evidence since real
faults are often louder or quieter), its **spread** and its **maximum** (a click or an impact inside
the part). The embedding is ``segments x 3 x n_mels`` values (3840), part after part, which is what
the ``knn-ldn`` detector reads with ``segments=20``: every training part is memory, each test part
is scored and the parts' scores are pooled by max or GeM, so a 200 ms click is not averaged away
over ten seconds (see :mod:`humwatch.detectors.local`). Other detectors take it as one long vector.

``config`` overrides ``segments``, ``n_mels``, ``hop_length`` and ``n_fft``. ``weights``:
``default`` / ``none`` (nothing to load) or a folder written by :meth:`Backbone.save`.
"""

from __future__ import annotations

from humwatch.models.lazy import LazyBackbone
from humwatch.models.registry import register_backbone
from humwatch.settings import Int, check_value

NAME = "features-segments"
ARCH_DEFAULTS = dict(segments=20, n_mels=64, hop_length=160, n_fft=1024)
STATS = 3
VERSION = 1


def _module(arch: dict):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SegmentStatistics(nn.Module):
        """(B, n_mels, frames) log-mel dB -> (B, segments * 3 * n_mels): per part and band the
        mean, the spread and the maximum."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.float()
            s = arch["segments"]
            mean = F.adaptive_avg_pool1d(x, s)
            var = (F.adaptive_avg_pool1d(x * x, s) - mean * mean).clamp(min=0.0)
            top = F.adaptive_max_pool1d(x, s)
            out = torch.stack([mean, var.sqrt(), top], dim=1)  # (B, 3, n_mels, S)
            return out.permute(0, 3, 1, 2).reshape(x.shape[0], -1)

    return SegmentStatistics()


def _check_arch(arch: dict) -> dict:
    for k in ("segments", "n_mels", "hop_length", "n_fft"):
        v = arch[k]
        check_value(v, Int(1), f"config {k}", f"backbone {NAME!r}")
    return dict(arch)


@register_backbone(NAME)
def build_segments(*, weights="default", precision="fp32", config=None, seed=0, device="cpu") -> LazyBackbone:
    """Factory registered as ``features-segments`` (see the module docstring)."""
    from humwatch.models.features import weight_free_backbone, weight_free_config

    arch = _check_arch(weight_free_config(NAME, weights, config, ARCH_DEFAULTS))
    return weight_free_backbone(
        NAME,
        arch,
        _module,
        version=VERSION,
        description="weight-free per-segment log-mel statistics",
        embedding_dim=arch["segments"] * STATS * arch["n_mels"],
        precision=precision,
        device=device,
        seed=seed,
    )
