"""The ``twfr`` backbone: a time-weighted frequency representation of a clip (TWFR; Guan et al.,
ICASSP 2023), weight-free. With the ``gmm`` detector it is their TWFR-GMM system.

For every mel band of the clip's log-mel spectrogram (dB power, ``n_mels`` bands, 100 frames per
second), the band's values over time are sorted from the highest down and averaged with weights
``r**0, r**1, r**2, ...`` (normalised to sum to 1): global weighted ranking pooling. ``r = 1`` is the
band's mean over time, ``r = 0`` its maximum, and values between weigh the loudest moments most,
so a short impact or a stuck valve's click raises the bands it sounds in instead of vanishing in a
ten-second mean, while the steady hum still counts. The embedding is ``n_mels`` values (dB, one
scale: no standardisation needed), one per band.

``r``: the pooling's decay. Its default 0.99 weighs about the loudest second of a 10 s clip (the
weights of the top 100 frames sum to 63 %); the paper chose ``r`` per machine type on anomalies,
which a plain folder of healthy recordings does not have, so it is one fixed value here.

Why not the authors' code: it is a few lines of numpy around scikit-learn's GaussianMixture, and
the detector (``gmm``) and frontend are this project's; the pooling is the part written here.

``config`` overrides ``r``, ``n_mels``, ``hop_length`` and ``n_fft``. ``weights``: ``default`` /
``none`` (nothing to load) or a folder written by :meth:`Backbone.save`.
"""

from __future__ import annotations

from humwatch.models.lazy import LazyBackbone
from humwatch.models.registry import register_backbone
from humwatch.settings import Int, Real, check_value

NAME = "twfr"
ARCH_DEFAULTS = dict(r=0.99, n_mels=128, hop_length=160, n_fft=1024)
VERSION = 1


def _module(arch: dict):
    import torch
    from torch import nn

    class RankWeightedPooling(nn.Module):
        """(B, n_mels, frames) log-mel dB -> (B, n_mels): per band, the values sorted from the
        highest down, averaged with weights ``r**k`` (normalised)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.float()
            ranked = torch.sort(x, dim=-1, descending=True).values
            k = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
            w = torch.pow(torch.full_like(k, float(arch["r"])), k)  # 0**0 is 1: r = 0 is the maximum
            return (ranked * (w / w.sum())).sum(dim=-1)

    return RankWeightedPooling()


def _check_arch(arch: dict) -> dict:
    for k in ("n_mels", "hop_length", "n_fft"):
        check_value(arch[k], Int(1), f"config {k}", f"backbone {NAME!r}")
    r = check_value(arch["r"], Real(0, 1, text=False), "config r", f"backbone {NAME!r}")
    return {**arch, "r": float(r)}


@register_backbone(NAME)
def build_twfr(*, weights="default", precision="fp32", config=None, seed=0, device="cpu") -> LazyBackbone:
    """Factory registered as ``twfr`` (see the module docstring)."""
    from humwatch.models.features import weight_free_backbone, weight_free_config

    arch = _check_arch(weight_free_config(NAME, weights, config, ARCH_DEFAULTS))
    return weight_free_backbone(
        NAME,
        arch,
        _module,
        version=VERSION,
        description="weight-free time-weighted frequency representation",
        embedding_dim=arch["n_mels"],
        precision=precision,
        device=device,
        seed=seed,
    )
