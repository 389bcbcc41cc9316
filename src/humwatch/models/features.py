"""The ``features`` backbone: weight-free statistics of the log-mel spectrogram, per band.

No training and no weights: a clip's embedding is, for every mel band of its log-mel spectrogram
(``logmel`` frontend: dB power, 64 mels, 100 frames per second):

* its **level**: the mean over time, the spread (standard deviation) and the percentiles 10, 50,
  90 and 99 (the 99th catches short impacts, crackle and clicks a mean hides);
* its **temporal modulation**: the mean absolute change from one frame to the next (roughness),
  and the log power of the band's level envelope in three modulation ranges, 0.5-4 Hz (slow
  pulsation, strokes), 4-16 Hz and 16-50 Hz (flutter, unbalance and belt wobble sidebands).

That gives ``n_mels x 10`` values (640). They are on different scales (dB, dB per frame, log
power), so use them with ``standardize`` (the detector's StandardScaler), e.g.
``embed-detect`` with ``knn``, ``lof`` or ``mahalanobis``. This is what a monitor uses when no
pretrained weights are available (``humwatch fit`` without ``--backbone``): unlike a randomly
initialised network it is not RANDOM INIT, and every number in it means something.

The statistics are a small parameter-free torch module (:class:`BandStatistics`), so everything
that takes a backbone (embedding cache, ``embed-detect``, ``embed-fusion``, t-SNE) takes this one.
Why not librosa's feature functions: they give one statistic each over the whole spectrum, and
the percentiles and modulation ranges per band here are ten lines of torch.

``config`` overrides ``n_mels``, ``hop_length``, ``n_fft``, ``percentiles`` and ``modulation_hz``.
``weights``: ``default`` / ``none`` (the same: there is nothing to load) or a folder written by
:meth:`Backbone.save` (its config is read back).
"""

from __future__ import annotations

from humwatch.errors import ConfigError
from humwatch.models.lazy import LazyBackbone
from humwatch.models.registry import Backbone, check_config, register_backbone
from humwatch.settings import Int, Real, Seq, check_value

NAME = "features"
ARCH_DEFAULTS = dict(
    n_mels=64, hop_length=160, n_fft=1024, percentiles=[10, 50, 90, 99], modulation_hz=[[0.5, 4.0], [4.0, 16.0], [16.0, 50.0]]
)
"""The statistics computed (see the module docstring)."""
VERSION = 1
"""Bumped whenever the statistics change (it is the backbone's weights identity, so caches follow)."""


def _module(arch: dict, sample_rate: int = 16000):
    import torch
    from torch import nn

    class BandStatistics(nn.Module):
        """(B, n_mels, frames) log-mel dB -> (B, n_mels * n_stats): per band level, spread,
        percentiles, frame-to-frame change and modulation power (rows: band-major per statistic)."""

        def __init__(self):
            super().__init__()
            self.q = [p / 100.0 for p in arch["percentiles"]]
            self.fps = sample_rate / arch["hop_length"]
            self.bands = [tuple(b) for b in arch["modulation_hz"]]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.float()
            mean = x.mean(dim=-1)
            stats = [mean, x.std(dim=-1, unbiased=False)]
            stats += list(torch.quantile(x, torch.tensor(self.q, dtype=x.dtype, device=x.device), dim=-1))
            stats.append((x[..., 1:] - x[..., :-1]).abs().mean(dim=-1))
            n = x.shape[-1]
            power = torch.fft.rfft(x - mean[..., None], dim=-1).abs() ** 2 / n
            freqs = torch.arange(power.shape[-1], device=x.device) * self.fps / n
            for lo, hi in self.bands:  # a mask, not an index: the same graph for every input (ONNX export)
                sel = ((freqs >= lo) & (freqs < hi)).to(power.dtype)
                band = (power * sel).sum(dim=-1) / sel.sum().clamp(min=1.0)  # 0 when no bin falls in the range
                stats.append(torch.log10(band + 1e-6))
            return torch.cat(stats, dim=-1)

    return BandStatistics()


def n_statistics(arch: dict) -> int:
    return 2 + len(arch["percentiles"]) + 1 + len(arch["modulation_hz"])


def _check_arch(arch: dict) -> dict:
    for k in ("n_mels", "hop_length", "n_fft"):
        v = arch[k]
        check_value(v, Int(1), f"config {k}", f"backbone {NAME!r}")
    ps = check_value(arch["percentiles"], Seq(Real(0, 100, text=False)), "config percentiles", f"backbone {NAME!r}")
    bands = arch["modulation_hz"]
    nyquist = 16000 / arch["hop_length"] / 2
    ok = isinstance(bands, (list, tuple)) and all(
        isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(f, (int, float)) for f in b) and 0 <= b[0] < b[1] <= nyquist + 1e-9
        for b in bands
    )
    if not ok:
        raise ConfigError(
            f"backbone {NAME!r}: config modulation_hz must be [low, high] pairs within 0-{nyquist:g} Hz (half the frame rate), got {bands!r}"
        )
    return {**arch, "percentiles": [float(p) for p in ps], "modulation_hz": [[float(a), float(b)] for a, b in bands]}


def weight_free_config(name: str, weights, config, defaults: dict) -> dict:
    """A weight-free backbone's architecture before its own checks: ``defaults``, then the config
    of a folder written by ``Backbone.save`` when ``weights`` names one (there are no weights to
    load: 'default' and 'none' mean the defaults), then ``config``'s overrides."""
    from pathlib import Path

    from humwatch.models.weights import check_meta_backbone, read_meta

    overrides = check_config(name, config or {}, defaults)
    base = dict(defaults)
    if weights not in (None, "default", "none"):
        folder = Path(str(weights)).expanduser()
        meta = read_meta(folder) if folder.is_dir() else None
        if meta is None:
            raise ConfigError(f"weights {weights}: the {name} backbone has no weights; use 'default' or a folder written by Backbone.save")
        check_meta_backbone(meta, name, folder)
        base.update(meta.get("config") or {})
    return {**base, **overrides}


def weight_free_backbone(name: str, arch: dict, module, *, version: int, description: str, embedding_dim: int, precision, device, seed):
    """The :class:`LazyBackbone` of a weight-free backbone (``features``, ``features-segments``,
    ``twfr``): the ``logmel`` frontend of ``arch``, a builtin weights identity ``name:v<version>`` (so
    caches follow a change of the statistics), and ``module(arch)`` built only when a clip is not in
    the embedding cache."""
    from humwatch.features import get_frontend
    from humwatch.models.weights import WeightsInfo

    frontend = get_frontend("logmel", n_fft=arch["n_fft"], hop_length=arch["hop_length"], n_mels=arch["n_mels"])
    info = WeightsInfo("builtin", False, description, identity=f"{name}:v{version}")
    ident = dict(
        name=name, frontend=frontend, embedding_dim=embedding_dim, precision=precision, weights=info, config=arch, device=device, seed=seed
    )
    return LazyBackbone(build=lambda: Backbone(module=module(arch).to(device).eval(), **ident), **ident)


@register_backbone(NAME)
def build_features(*, weights="default", precision="fp32", config=None, seed=0, device="cpu") -> LazyBackbone:
    """Factory registered as ``features`` (see the module docstring): its identity now, the (cheap,
    weight-free) module only when a clip is not in the embedding cache."""
    arch = _check_arch(weight_free_config(NAME, weights, config, ARCH_DEFAULTS))
    return weight_free_backbone(
        NAME,
        arch,
        _module,
        version=VERSION,
        description="weight-free per-band log-mel statistics",
        embedding_dim=arch["n_mels"] * n_statistics(arch),
        precision=precision,
        device=device,
        seed=seed,
    )
