"""The MIMII autoencoder baseline, in PyTorch.

Purohit et al., "MIMII Dataset: Sound Dataset for Malfunctioning Industrial Machine Investigation and
Inspection" (DCASE 2019), ship a Keras baseline that the study keeps unchanged: fully connected layers
64-64-8-64-64 with ReLU and a linear output of the input size, mean squared error, Adam at 1e-3,
50 epochs, batch 512, trained on the 309 context vectors (64 mels x 5 frames) of every normal training
clip; a clip's anomaly score is the mean reconstruction error over its 309 vectors.

Example::

    >>> from humwatch.models.autoencoder import AutoencoderDetector
    >>> det = AutoencoderDetector(epochs=50).fit(train_features)   # list of (309, 320) arrays
    >>> scores = det.score_clips(test_features)                     # one score per clip
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from humwatch.errors import ConfigError
from humwatch.progress import bar
from humwatch.settings import Int, Real, Settings, setting

HIDDEN = (64, 64, 8, 64, 64)
"""Layer widths of the MIMII baseline (encoder 64-64, bottleneck 8, decoder 64-64)."""


class Autoencoder(nn.Module):
    """FC autoencoder: input -> 64 -> 64 -> 8 -> 64 -> 64 -> input, ReLU between, linear output."""

    def __init__(self, input_dim: int = 320, hidden: Sequence[int] = HIDDEN):
        super().__init__()
        layers: list[nn.Module] = []
        d = input_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, input_dim))
        self.net = nn.Sequential(*layers)
        self.input_dim = input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The 8-d bottleneck code."""
        return self.net[:6](x)  # the first three Linear+ReLU pairs: in -> 64 -> 64 -> 8


@dataclass
class AutoencoderSettings(Settings):
    """The baseline's training settings (the study's: 50 epochs, Adam 1e-3, batch 512)."""

    where: ClassVar[str] = "autoencoder"
    epochs: int = setting(50, Int(1), "training epochs (the study: 50)")
    lr: float = setting(1e-3, Real(0, open_low=True), "Adam learning rate")
    batch_size: int = setting(512, Int(1), "context vectors per training step")


class AutoencoderDetector:
    """Train the baseline on normal clips' context vectors, score clips by mean reconstruction error."""

    def __init__(self, epochs: int = 50, lr: float = 1e-3, batch_size: int = 512, seed: int = 0):
        self.settings = AutoencoderSettings(epochs, lr, batch_size).validate()
        self.seed = seed
        self.model_: Autoencoder | None = None
        self.loss_history_: list[float] = []

    def get_params(self) -> dict:
        return {**asdict(self.settings), "seed": self.seed}

    def fit(self, clips: Sequence[np.ndarray], progress: bool = True, description: str = "autoencoder") -> "AutoencoderDetector":
        if len(clips) == 0:
            raise ConfigError("the autoencoder needs at least one normal training clip")
        s = self.settings
        x = torch.from_numpy(np.concatenate([np.asarray(c, dtype=np.float32) for c in clips]))
        torch.manual_seed(self.seed)
        model = Autoencoder(input_dim=x.shape[1])
        opt = torch.optim.Adam(model.parameters(), lr=s.lr)
        loss_fn = nn.MSELoss()
        gen = torch.Generator().manual_seed(self.seed)
        n = x.shape[0]
        model.train()
        self.loss_history_ = []
        with bar(f"{description} ({n} vectors)", s.epochs, progress) as b:
            for _ in range(s.epochs):
                perm = torch.randperm(n, generator=gen)
                total = 0.0
                for i in range(0, n, s.batch_size):
                    xb = x[perm[i : i + s.batch_size]]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(xb), xb)
                    loss.backward()
                    opt.step()
                    total += loss.item() * xb.shape[0]
                self.loss_history_.append(total / n)
                b.advance(1, description=f"{description} loss {total / n:.3f}")
        model.eval()
        self.model_ = model
        return self

    @torch.no_grad()
    def score_clips(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Mean squared reconstruction error over each clip's context vectors (higher = more anomalous).
        Every clip's vectors go through the network in one forward pass; each clip's error is the
        mean of its own rows, bit for bit what the clip scored alone gives (a row's output does not
        depend on the other rows: tests/test_service_batching.py)."""
        if self.model_ is None:
            raise ConfigError("the autoencoder is not fitted yet")
        arrays = []
        for c in clips:
            a = np.asarray(c, dtype=np.float32)
            if a.ndim != 2 or a.shape[1] != self.model_.input_dim:
                raise ConfigError(f"clip features of shape {tuple(a.shape)} do not fit an autoencoder of input {self.model_.input_dim}")
            arrays.append(a)
        out = np.empty(len(arrays), dtype=np.float64)
        if not arrays:
            return out
        x = torch.from_numpy(np.concatenate(arrays)) if len(arrays) > 1 else torch.from_numpy(arrays[0])
        err = (self.model_(x) - x) ** 2
        start = 0
        for i, a in enumerate(arrays):
            out[i] = float(err[start : start + a.shape[0]].mean())
            start += a.shape[0]
        return out


# -- the autoencoder as a registry backbone ------------------------------------------------------


class _EncoderMean(nn.Module):
    """(B, frames, input_dim) context vectors -> (B, 8): the mean bottleneck code over a clip's frames.
    Holds the whole autoencoder, so a saved backbone can be trained further or scored with."""

    def __init__(self, autoencoder: Autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(x).mean(dim=1)


def _build_backbone():
    from humwatch.features import get_frontend
    from humwatch.models.lazy import LazyBackbone
    from humwatch.models.registry import Backbone, check_config, random_init_context, register_backbone
    from humwatch.models.weights import WeightsInfo, check_meta_backbone, find_weight_file, load_state_dict, read_meta, resolve_weights

    class AutoencoderBackbone(Backbone):
        """The baseline's encoder as a backbone: a clip's embedding is its mean 8-d code."""

        def _block_modules(self, unit: str = "stage"):
            net = self.module.autoencoder.net
            return [("encoder", [net[:6]]), ("decoder", [net[6:]])]

        def _check_input(self, x: np.ndarray) -> None:
            if x.ndim != 3 or x.shape[2] != self.module.autoencoder.input_dim:
                raise ConfigError(f"autoencoder: input of shape {x.shape} is not (clips, frames, {self.module.autoencoder.input_dim})")

    @register_backbone("autoencoder")
    def build_autoencoder(*, weights="none", precision="fp32", config=None, seed=0, device="cpu"):
        """``weights``: ``none`` (random init) or a folder written by ``Backbone.save`` — e.g. the
        ``models/<machine>`` folders an ``humwatch run --method autoencoder`` leaves. The autoencoder
        has no pretrained weights to download."""
        arch = {"input_dim": 320, **check_config("autoencoder", config or {}, {"input_dim": 320})}
        if weights in (None, "default"):
            raise ConfigError(
                "autoencoder: there are no pretrained weights; pass a folder saved by a run "
                "(RUN_DIR/models/<machine>) with --weights, or --weights none"
            )
        resolved = resolve_weights(weights, default="none")
        if resolved.kind == "hub":
            raise ConfigError("autoencoder: weights come from a local folder, not the hub")
        if resolved.kind == "none":
            info = WeightsInfo("none", True, f"seed {seed}", f"none:seed{seed}")
            weight_file = None
        else:
            folder = resolved.path if resolved.kind == "dir" else resolved.path.parent
            meta = read_meta(folder) if resolved.kind == "dir" else None
            check_meta_backbone(meta, "autoencoder", folder)
            arch.update((meta or {}).get("config") or {})
            weight_file = find_weight_file(folder) if resolved.kind == "dir" else resolved.path
            origin = (meta or {}).get("origin", {}).get("description", "")
            info = WeightsInfo(resolved.source, False, origin or "trained autoencoder", resolved.identity())
        ident = dict(
            name="autoencoder",
            frontend=get_frontend("ae"),
            embedding_dim=HIDDEN[2],
            precision=precision,
            weights=info,
            config=arch,
            device=device,
            seed=seed,
        )

        def build():
            with random_init_context(seed):
                model = Autoencoder(int(arch["input_dim"]))
            if weight_file is not None:
                sd = load_state_dict(weight_file)
                sd = {k[len("autoencoder.") :] if k.startswith("autoencoder.") else k: v for k, v in sd.items()}
                try:
                    model.load_state_dict(sd)
                except RuntimeError:
                    raise ConfigError(f"weights {resolved.path}: do not fit the autoencoder (input {arch['input_dim']})") from None
            return AutoencoderBackbone(module=_EncoderMean(model).to(device).eval(), **ident)

        return LazyBackbone(build=build, **ident)

    return AutoencoderBackbone


AutoencoderBackbone = _build_backbone()


def detector_backbone(det: AutoencoderDetector, note: str):
    """A fitted :class:`AutoencoderDetector`'s model as a backbone (to save it with ``.save(dir)``)."""
    from humwatch.features import get_frontend
    from humwatch.models.registry import state_fingerprint
    from humwatch.models.weights import WeightsInfo

    if det.model_ is None:
        raise ConfigError("the autoencoder is not fitted yet")
    info = WeightsInfo("trained", False, note, f"trained:{state_fingerprint(det.model_)}")
    return AutoencoderBackbone(
        name="autoencoder",
        frontend=get_frontend("ae"),
        module=_EncoderMean(det.model_).eval(),
        embedding_dim=HIDDEN[2],
        precision="fp32",
        weights=info,
        config={"input_dim": det.model_.input_dim},
    )
