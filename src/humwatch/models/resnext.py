"""The ResNeXt-101 32x8d backbone (Xie et al., CVPR 2017), as timm builds it.

``timm.create_model("resnext101_32x8d", num_classes=0)``: the classifier is removed, so the output
is the globally average-pooled 2048-d feature of the last stage. Input: the ``cnn`` frontend
(3 x 128 x 1251 normalised log-mel; any time length works). Default weights:
:data:`DEFAULT_WEIGHTS`, timm 1.0's default pretrained tag for this architecture (torchvision's
ImageNet-1k weights, ``tv_in1k``). Other timm tags can be named as ``resnext101_32x8d.<tag>``
(e.g. ``resnext101_32x8d.fb_swsl_ig1b_ft_in1k``) or as their hub id.

Local weights: a folder written by :meth:`Backbone.save`, a timm hub snapshot folder, or a
checkpoint file (``.safetensors`` preferred; ``.pth``/``.pt``/``.bin`` are read with
``torch.load(weights_only=True)``). A checkpoint's ``fc.*`` classifier tensors are dropped.

``config`` overrides timm's ``ResNet`` arguments for tiny test models: ``layers`` (blocks per
stage), ``channels`` (stage widths before the x4 bottleneck expansion), ``cardinality``,
``base_width`` and ``stem_width``; the embedding has ``4 * channels[-1]`` values.

Example::

    >>> from humwatch.models import create_backbone
    >>> bb = create_backbone("resnext101_32x8d", weights="none",
    ...                      config=dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4,
    ...                                  base_width=32, stem_width=8))
    >>> bb.embedding_dim
    256
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from humwatch.errors import ConfigError
from humwatch.features import get_frontend
from humwatch.models.lazy import LazyBackbone
from humwatch.models.registry import Backbone, check_config, random_init_context, register_backbone
from humwatch.models.weights import WeightsInfo, check_meta_backbone, find_weight_file, load_state_dict, read_meta, resolve_weights
from humwatch.settings import Int, check_value

NAME = "resnext101_32x8d"
DEFAULT_WEIGHTS = "timm/resnext101_32x8d.tv_in1k"
"""timm's default pretrained tag for ``resnext101_32x8d`` (timm 1.0: ``tv_in1k``, torchvision ImageNet-1k)."""

ARCH_DEFAULTS = dict(layers=[3, 4, 23, 3], channels=[64, 128, 256, 512], cardinality=32, base_width=8, stem_width=64)
"""timm's ``resnext101_32x8d`` arguments (ResNet with Bottleneck blocks, 32 groups of width 8)."""

EXPANSION = 4
"""Bottleneck expansion: output channels of a stage = 4 x its width."""


class ResNeXtBackbone(Backbone):
    """:class:`Backbone` around a timm ``ResNet`` (``.model``, the same object as ``.module``), in
    channels-last memory format: oneDNN's grouped convolutions ran 1.3x (bf16) to 1.8x (fp32)
    faster that way on a 2-core EPYC (docs/benchmarks.md)."""

    channels_last = True

    @property
    def model(self):
        return self.module

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[2:]) < 32:
            raise ConfigError(f"{NAME}: expected a batch of shape (B, 3, mels >= 32, frames >= 32), got {tuple(x.shape)}")

    def _block_modules(self, unit: str = "stage"):
        m = self.module
        stages = [(f"layer{i}", getattr(m, f"layer{i}")) for i in range(1, 5)]
        if unit == "bottleneck":  # every Bottleneck module of every stage its own block
            return [("stem", [m.conv1, m.bn1])] + [(f"{name}.{k}", [b]) for name, st in stages for k, b in enumerate(st)]
        return [("stem", [m.conv1, m.bn1])] + [(name, [st]) for name, st in stages]

    def _save_weights(self, directory: Path) -> None:
        from humwatch.io import write_json

        super()._save_weights(directory)
        write_json(
            directory / "config.json",
            {"architecture": NAME, "num_classes": 0, "num_features": self.embedding_dim, "model_args": self.config},
        )


def _check_arch(arch: dict) -> dict:
    out = {}
    for k in ("layers", "channels"):
        v = arch[k]
        if not isinstance(v, (list, tuple)) or len(v) != 4 or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in v):
            raise ConfigError(f"backbone {NAME!r}: config {k} must be 4 positive integers, got {v!r}")
        out[k] = [int(i) for i in v]
    for k in ("cardinality", "base_width", "stem_width"):
        out[k] = check_value(arch[k], Int(1), f"config {k}", f"backbone {NAME!r}")
    for c in out["channels"]:  # timm's Bottleneck width: floor(planes * base_width / 64) * cardinality
        if math.floor(c * out["base_width"] / 64) < 1:
            raise ConfigError(
                f"backbone {NAME!r}: channels {c} x base_width {out['base_width']} / 64 gives zero-width groups (raise base_width)"
            )
    return out


def _timm_tag_to_hub(weights):
    """``resnext101_32x8d.<tag>`` -> that tag's hub id (timm's pretrained configs)."""
    if isinstance(weights, str) and weights.startswith(NAME + ".") and not Path(weights).expanduser().exists():
        import timm

        if weights not in timm.list_pretrained(NAME + ".*"):
            raise ConfigError(f"weights {weights!r}: timm has no such tag (choose from {', '.join(timm.list_pretrained(NAME + '.*'))})")
        return timm.models.get_pretrained_cfg(weights).hf_hub_id or weights
    return weights


def _load_into(model, sd: dict, where) -> None:
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}  # the ImageNet classifier is not used
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shaped = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shaped:
        first = (shaped or missing or unexpected)[0]
        raise ConfigError(
            f"weights {where}: do not fit {NAME} with this config ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(shaped)} mis-shaped tensors, e.g. {first})"
        )
    model.load_state_dict(sd, strict=False)


@register_backbone(NAME)
def build_resnext(*, weights="default", precision="fp32", config=None, seed=0, device="cpu") -> LazyBackbone:
    """Factory registered as ``resnext101_32x8d`` (see the module docstring); the network is built
    on first need (its identity is known at once)."""
    overrides = check_config(NAME, config or {}, ARCH_DEFAULTS)
    resolved = resolve_weights(_timm_tag_to_hub(weights), DEFAULT_WEIGHTS)
    base = dict(ARCH_DEFAULTS)
    meta = None
    weight_file = None
    if resolved.kind in ("dir", "hub"):
        folder = resolved.path
        meta = read_meta(folder)
        check_meta_backbone(meta, NAME, folder)
        if meta is not None:
            base.update(meta.get("config") or {})
        else:
            from humwatch.io import read_json

            cj = folder / "config.json"
            if cj.is_file():
                doc = read_json(cj, dict)  # a damaged one is a DamagedFileError, not an architecture guessed
                arch = doc.get("architecture")
                if arch and arch != NAME:
                    raise ConfigError(f"weights {folder}: holds a timm {arch!r} model, not {NAME!r}")
                if isinstance(doc.get("model_args"), dict):
                    base.update(doc["model_args"])
        weight_file = find_weight_file(folder)
    elif resolved.kind == "file":
        weight_file = resolved.path
    arch = _check_arch({**base, **overrides})
    if resolved.kind == "none":
        info = WeightsInfo("none", True, f"seed {seed}", identity=f"none:seed={seed}")
    elif resolved.kind == "hub":
        info = WeightsInfo(resolved.source, False, f"pretrained {resolved.repo_id}", identity=resolved.identity())
    else:
        desc = f"loaded from {resolved.path}"
        if meta and meta.get("origin", {}).get("source"):
            desc += f", saved from {meta['origin']['source']}"
        info = WeightsInfo(resolved.source, bool(meta and meta.get("random_init")), desc, identity=resolved.identity())
    ident = dict(
        name=NAME,
        frontend=get_frontend("cnn"),
        embedding_dim=EXPANSION * arch["channels"][-1],
        precision=precision,
        weights=info,
        config=arch,
        device=device,
        seed=seed,
    )

    def build() -> ResNeXtBackbone:
        import timm

        with random_init_context(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = timm.create_model(NAME, pretrained=False, num_classes=0, **arch)
        if weight_file is not None:
            _load_into(model, load_state_dict(weight_file), weight_file)
        import torch

        model.eval().to(device=device, memory_format=torch.channels_last)
        return ResNeXtBackbone(module=model, **{**ident, "embedding_dim": model.num_features})

    return LazyBackbone(build=build, **ident)
