"""The ``idnet`` backbone: an STgram-MFN network, trained from scratch to tell machines apart.

Liu et al., "Anomalous sound detection using spectral-temporal information fusion" (ICASSP 2022)
feed a MobileFaceNet (Chen et al., 2018) two views of a clip stacked as channels: the log-mel
spectrogram and a *Tgram*, a spectrogram-like map a 1-D convolution learns from the waveform
(kernel = the STFT window, stride = the hop, then three LayerNorm + LeakyReLU + Conv1d layers).
Trained to classify machine ids (``humwatch.idtrain``, the ``idnet`` method), its embedding of a
normal clip lies near the training clips of its machine; an anomalous clip lies farther.

Here, so that it trains on a CPU in minutes:

* it sees **crops** of ``crop_frames`` frames (64 frames of hop 512: 2.05 s), during training at
  random places; a clip's embedding is the mean of its crops' unit-length embeddings, crops
  every half crop over the whole clip (9 for 10 s), so any clip length works;
* global average pooling replaces MobileFaceNet's fixed-size global depthwise convolution
  (which only fits one input size);
* the log-mel is computed in torch (``torch.stft`` and librosa's mel filter bank as a buffer):
  the frontend is the signal itself (``wave``), and the waveform branch can be turned off
  (``waveform_branch: false``: MobileFaceNet on log-mel alone).

MobileFaceNet keeps its bottleneck settings (expansion, channels, repeats, strides:
``(2,64,5,2) (4,128,1,2) (2,128,6,1) (4,128,1,2) (2,128,2,1)``), a 512-wide 1x1 convolution and a
128-d linear embedding; ``width`` scales every channel count (1.0: 1.26 M parameters with the
waveform branch, 0.98 M without). ``weights``: ``none`` (random init: an untrained network) or a
folder written by :meth:`Backbone.save` after training (``RUN/models/<group>/backbone``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from humwatch.errors import ConfigError, one_line
from humwatch.models.lazy import LazyBackbone
from humwatch.models.registry import Backbone, check_config, random_init_context, register_backbone, state_fingerprint
from humwatch.settings import Bool, Int, Real, check_value

NAME = "idnet"
SAMPLE_RATE = 16000
ARCH_DEFAULTS = dict(n_mels=64, n_fft=1024, hop_length=512, crop_frames=64, width=1.0, embedding_dim=128, waveform_branch=True)
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
"""MobileFaceNet's bottleneck settings: expansion, output channels, repeats, first stride."""


class _ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        super().__init__(*layers, *([nn.PReLU(cout)] if act else []))


class _Bottleneck(nn.Module):
    """MobileNetV2's inverted residual with PReLU (MobileFaceNet's block)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            _ConvBN(cin, hidden, 1), _ConvBN(hidden, hidden, 3, stride, groups=hidden), _ConvBN(hidden, cout, 1, act=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """MobileFaceNet (Chen et al., 2018) with global average pooling: (B, C, mels, frames) -> (B, D)."""

    def __init__(self, in_channels: int, width: float = 1.0, embedding_dim: int = 128):
        super().__init__()
        c0 = max(8, int(round(64 * width)))
        self.stem = nn.Sequential(_ConvBN(in_channels, c0, 3, 2), _ConvBN(c0, c0, 3, 1, groups=c0))
        blocks, cin = [], c0
        for t, c, n, s in BOTTLENECKS:
            c = max(8, int(round(c * width)))
            for i in range(n):
                blocks.append(_Bottleneck(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.top = _ConvBN(cin, 512, 1)
        self.embed = nn.Sequential(nn.Linear(512, embedding_dim), nn.BatchNorm1d(embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.top(self.blocks(self.stem(x))).mean(dim=(2, 3)))


class TgramNet(nn.Module):
    """STgram's waveform branch: (B, samples) -> (B, n_mels, frames), frames as the STFT's."""

    def __init__(self, n_mels: int, n_fft: int, hop: int, layers: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(1, n_mels, n_fft, hop, padding=n_fft // 2, bias=False)
        self.norms = nn.ModuleList(nn.LayerNorm(n_mels) for _ in range(layers))
        self.convs = nn.ModuleList(nn.Conv1d(n_mels, n_mels, 3, 1, 1, bias=False) for _ in range(layers))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.conv(wave[:, None])
        for norm, conv in zip(self.norms, self.convs):
            x = conv(nn.functional.leaky_relu(norm(x.transpose(1, 2)).transpose(1, 2), 0.2))
        return x


class IdNet(nn.Module):
    """Log-mel (+ Tgram) -> MobileFaceNet. ``forward(wave)``: a whole clip's embedding (mean of its
    crops' unit embeddings); ``crop_embedding(wave_crops)``: one embedding per crop (training)."""

    def __init__(self, arch: dict):
        super().__init__()
        import librosa

        self.arch = dict(arch)
        n_fft, hop, n_mels = arch["n_fft"], arch["hop_length"], arch["n_mels"]
        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=n_mels)
        self.register_buffer("mel_basis", torch.from_numpy(np.asarray(mel, dtype=np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.tgram = TgramNet(n_mels, n_fft, hop) if arch["waveform_branch"] else None
        channels = 2 if self.tgram is not None else 1
        self.input_norm = nn.BatchNorm2d(channels)
        self.mfn = MobileFaceNet(channels, float(arch["width"]), int(arch["embedding_dim"]))

    @property
    def crop_samples(self) -> int:
        return int(self.arch["crop_frames"]) * int(self.arch["hop_length"])

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        spec = (
            torch.stft(wave, self.arch["n_fft"], self.arch["hop_length"], window=self.window, center=True, return_complex=True).abs() ** 2
        )
        return 10.0 * torch.log10(self.mel_basis @ spec + 1e-10)

    def crop_embedding(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, embedding_dim), not normalised (the margin head normalises)."""
        mel = self.log_mel(wave)
        x = mel[:, None]
        if self.tgram is not None:
            x = torch.cat([x, self.tgram(wave)[:, None, :, : mel.shape[-1]]], dim=1)
        return self.mfn(self.input_norm(x))

    def crop_starts(self, n: int) -> list[int]:
        """Where a clip of ``n`` samples is cut: every half crop, the last one flush with the end."""
        c = self.crop_samples
        if n <= c:
            return [0]
        starts = list(range(0, n - c + 1, c // 2))
        return starts if starts[-1] == n - c else starts + [n - c]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.float()
        c, n = self.crop_samples, wave.shape[-1]
        if n < c:
            wave = nn.functional.pad(wave, (0, c - n))
            n = c
        starts = self.crop_starts(n)
        crops = torch.stack([wave[:, s : s + c] for s in starts], dim=1)  # (B, crops, samples)
        emb = nn.functional.normalize(self.crop_embedding(crops.reshape(-1, c)), dim=-1)
        return emb.reshape(wave.shape[0], len(starts), -1).mean(dim=1)


class IdNetBackbone(Backbone):
    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 2:
            raise ConfigError(f"{NAME}: expected a batch of signals (clips, samples), got shape {tuple(x.shape)}")

    def _block_modules(self, unit: str = "stage"):
        m = self.module
        low = [m.input_norm, m.mfn.stem] + ([m.tgram] if m.tgram is not None else [])
        return [("input", low), ("blocks", [m.mfn.blocks]), ("top", [m.mfn.top, m.mfn.embed])]


def _check_arch(arch: dict) -> dict:
    for k in ("n_mels", "n_fft", "hop_length", "crop_frames", "embedding_dim"):
        v = arch[k]
        check_value(v, Int(1), f"config {k}", f"backbone {NAME!r}")
    check_value(arch["width"], Real(0, 4, open_low=True, text=False), "config width", f"backbone {NAME!r}")
    check_value(arch["waveform_branch"], Bool(), "config waveform_branch", f"backbone {NAME!r}")
    if arch["crop_frames"] < 8:
        raise ConfigError(f"backbone {NAME!r}: config crop_frames must be 8 or more (MobileFaceNet downsamples 16x)")
    return {**arch, "width": float(arch["width"])}


@register_backbone(NAME)
def build_idnet(*, weights="none", precision="fp32", config=None, seed=0, device="cpu") -> LazyBackbone:
    """Factory registered as ``idnet`` (see the module docstring): its identity now (from the saved
    folder's JSON), the network only when a clip is not in the embedding cache."""
    from humwatch.features import get_frontend
    from humwatch.models.weights import WeightsInfo, check_meta_backbone, find_weight_file, load_state_dict, read_meta, resolve_weights

    if weights in (None, "default"):
        raise ConfigError(
            f"{NAME}: there are no pretrained weights; it is trained by `--method idnet` (pass its saved "
            "folder RUN/models/<group>/backbone with --weights, or --weights none)"
        )
    overrides = check_config(NAME, config or {}, ARCH_DEFAULTS)
    resolved = resolve_weights(weights, default="none")
    if resolved.kind in ("hub", "file"):
        raise ConfigError(f"{NAME}: weights come from a folder saved by humwatch, not {resolved.kind} {weights}")
    meta = None
    if resolved.kind == "dir":
        meta = read_meta(resolved.path)
        if meta is None:
            raise ConfigError(f"weights {resolved.path}: not a folder saved by humwatch (no humwatch_backbone.json)")
        check_meta_backbone(meta, NAME, resolved.path)
    arch = _check_arch({**ARCH_DEFAULTS, **((meta or {}).get("config") or {}), **overrides})
    if resolved.kind == "none":
        info = WeightsInfo("none", True, f"untrained, seed {seed}", f"none:seed{seed}")
        weight_file = None
    else:
        weight_file = find_weight_file(resolved.path)
        origin = meta.get("origin") or {}
        identity = str(origin.get("identity") or "")
        info = WeightsInfo(resolved.source, False, str(origin.get("description") or "trained idnet"), identity or resolved.identity())
    ident = dict(
        name=NAME,
        frontend=get_frontend("wave"),
        embedding_dim=int(arch["embedding_dim"]),
        precision=precision,
        weights=info,
        config=arch,
        device=device,
        seed=seed,
    )

    def build() -> IdNetBackbone:
        with random_init_context(seed):
            net = IdNet(arch)
        if weight_file is not None:
            try:
                net.load_state_dict(load_state_dict(weight_file))
            except RuntimeError as e:
                raise ConfigError(f"weights {resolved.path}: do not fit {NAME} with this config ({one_line(e)})") from None
            if info.identity.startswith("trained:") and info.identity != f"trained:{state_fingerprint(net)}":
                raise ConfigError(f"weights {resolved.path}: the weights changed since they were saved")
        return IdNetBackbone(module=net.to(device).eval(), **ident)

    return LazyBackbone(build=build, **ident)
