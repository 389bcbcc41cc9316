"""The Audio Spectrogram Transformer backbone (Gong, Chung & Glass, Interspeech 2021).

Hugging Face ``transformers.ASTModel``; a clip's embedding is the model's ``pooler_output``: the
mean of the two class tokens (CLS and distillation) after the final layer norm, 768 values for the
study's checkpoint. Its input is the ``ast`` frontend (``ASTFeatureExtractor``: 1024 frames x 128
mel bins). The default weights are :data:`DEFAULT_WEIGHTS`, the AudioSet-finetuned checkpoint of
the AST paper (10 x 10 patch strides, 0.459 mAP); the checkpoint's AudioSet classifier head is
dropped (only the encoder is loaded).

``attention="sdpa"`` (default, fast) or ``"eager"`` (slower; returns attention weights, which the
explanation code needs: :meth:`ASTBackbone.forward_with_attentions`). Both give the same
embeddings to float rounding, so they share cache entries.

Example::

    >>> from humwatch.models import create_backbone
    >>> bb = create_backbone("ast")                       # MIT/ast-finetuned-audioset-10-10-0.4593
    >>> bb = create_backbone("ast", weights="none",       # tiny random model for tests
    ...                      config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                                  intermediate_size=64, max_length=128))
    >>> bb.embed(bb.frontend.batch([y])).shape
    (1, 32)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from humwatch.errors import ConfigError, one_line
from humwatch.features import AST_PARAMS, get_frontend
from humwatch.models.lazy import LazyBackbone
from humwatch.models.registry import Backbone, check_config, quiet_hf_loading, random_init_context, register_backbone
from humwatch.models.weights import WeightsInfo, check_meta_backbone, read_meta, resolve_weights
from humwatch.settings import Int, check_value

log = logging.getLogger("humwatch")

ATTENTIONS = ("sdpa", "eager")
NUM_MEL_BINS = AST_PARAMS["num_mel_bins"]

DEFAULT_WEIGHTS = "MIT/ast-finetuned-audioset-10-10-0.4593"
"""The study's AST: AudioSet-finetuned, ImageNet-pretrained, patch strides 10 x 10, 0.4593 mAP (Gong et al. 2021)."""

ARCH_DEFAULTS = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_length=AST_PARAMS["max_length"],
    frequency_stride=10,
    time_stride=10,
    patch_size=16,
    num_mel_bins=AST_PARAMS["num_mel_bins"],
)
"""``ASTConfig`` settings of :data:`DEFAULT_WEIGHTS` (ViT-Base, 16 x 16 patches, 1024 frames x 128 mel
bins); ``config`` may override them (``num_mel_bins`` must stay 128: the frontend's)."""


@lru_cache(maxsize=None)
def _pooled_class():
    from torch import nn

    class ASTPooled(nn.Module):
        """ASTModel -> its pooler output (mean of the CLS and distillation tokens), (B, hidden_size)."""

        def __init__(self, ast):
            super().__init__()
            self.ast = ast

        def forward(self, input_values):
            return self.ast(input_values=input_values).pooler_output

    return ASTPooled


class ASTBackbone(Backbone):
    """:class:`Backbone` around a Hugging Face ``ASTModel`` (``.model``); ``.attention`` is the
    attention implementation in use."""

    def __init__(self, *, model, attention: str, **kw):
        super().__init__(module=_pooled_class()(model), **kw)
        self.model = model
        self.attention = attention

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.config["max_length"], NUM_MEL_BINS)

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 3 or tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(f"ast: expected a batch of shape (B, {self.input_shape[0]}, {self.input_shape[1]}), got {tuple(x.shape)}")

    def _block_modules(self, unit: str = "stage"):
        m = self.model
        return (
            [("embeddings", [m.embeddings])] + [(f"layer{i}", [layer]) for i, layer in enumerate(m.layers)] + [("layernorm", [m.layernorm])]
        )

    def forward_with_attentions(self, x):
        """(embeddings (B, D), attentions: one (B, heads, T, T) tensor per layer) for a tensor batch.

        Needs ``attention="eager"`` (SDPA does not return attention weights)."""
        if self.attention != "eager":
            raise ConfigError("ast: attention weights need create_backbone('ast', ..., attention='eager')")
        out = self.model(input_values=x, output_attentions=True)
        return out.pooler_output, tuple(out.attentions)

    def _save_weights(self, directory: Path) -> None:
        # save_pretrained writes config.json + model.safetensors (HF layout, loadable by transformers
        # alone); written into a temporary folder first so a failed save leaves nothing half-written
        tmp = Path(tempfile.mkdtemp(prefix=".ast-save-", dir=directory))
        try:
            with quiet_hf_loading():
                self.model.save_pretrained(str(tmp))
            for f in sorted(tmp.iterdir()):
                os.replace(f, directory / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_arch(cfg: dict) -> None:
    for k, v in cfg.items():
        check_value(v, Int(1), f"config {k}", "backbone 'ast'")
    if "hidden_size" in cfg or "num_attention_heads" in cfg:
        h = cfg.get("hidden_size", ARCH_DEFAULTS["hidden_size"])
        n = cfg.get("num_attention_heads", ARCH_DEFAULTS["num_attention_heads"])
        if h % n:
            raise ConfigError(f"backbone 'ast': hidden_size {h} is not a multiple of num_attention_heads {n}")
    if cfg.get("num_mel_bins", NUM_MEL_BINS) != NUM_MEL_BINS:
        raise ConfigError(f"backbone 'ast': num_mel_bins must be {NUM_MEL_BINS} (the ast frontend's)")
    patch = cfg.get("patch_size", ARCH_DEFAULTS["patch_size"])
    if cfg.get("max_length", patch) < patch:
        raise ConfigError(f"backbone 'ast': max_length must be at least one patch ({patch} frames)")


def _folder_arch(folder: Path) -> dict:
    """The architecture a save_pretrained folder's config.json describes (ASTConfig's defaults,
    which are :data:`ARCH_DEFAULTS`, for what it leaves out); read without building the model."""
    from humwatch.io import read_json_doc

    doc = read_json_doc(folder / "config.json", missing=f"weights {folder}: no config.json (not a save_pretrained / Backbone.save folder)")
    model_type = doc.get("model_type", "audio-spectrogram-transformer")
    if model_type != "audio-spectrogram-transformer":
        raise ConfigError(f"weights {folder}: holds a {model_type!r} model, not an AST")
    return {k: doc.get(k, v) for k, v in ARCH_DEFAULTS.items()}


@register_backbone("ast")
def build_ast(*, weights="default", precision="fp32", config=None, seed=0, device="cpu", attention="sdpa") -> LazyBackbone:
    """Factory registered as ``ast`` (see the module docstring). Returns the backbone's identity
    (weights resolved, architecture known) at once; the network is built on first need."""
    if attention not in ATTENTIONS:
        raise ConfigError(f"ast: unknown attention {attention!r} (choose from {', '.join(ATTENTIONS)})")
    overrides = check_config("ast", config or {}, ARCH_DEFAULTS)
    _check_arch(overrides)
    resolved = resolve_weights(weights, DEFAULT_WEIGHTS)
    if resolved.kind == "file":
        raise ConfigError(
            f"weights {resolved.path}: AST weights must be a folder with config.json and model.safetensors "
            "(as written by save_pretrained or Backbone.save)"
        )
    meta = None
    if resolved.kind == "none":
        full = {**ARCH_DEFAULTS, **overrides}
        info = WeightsInfo("none", True, f"seed {seed}", identity=f"none:seed={seed}")
    else:
        folder = resolved.path
        meta = read_meta(folder)
        check_meta_backbone(meta, "ast", folder)
        full = {**_folder_arch(folder), **overrides}
        if resolved.kind == "hub":
            desc = f"pretrained {resolved.repo_id}"
        else:
            desc = f"loaded from {folder}"
            if meta and meta.get("origin", {}).get("source"):
                desc += f", saved from {meta['origin']['source']}"
        info = WeightsInfo(resolved.source, bool(meta and meta.get("random_init")), desc, identity=resolved.identity())
    if full["num_mel_bins"] != NUM_MEL_BINS:
        raise ConfigError(f"ast: the model expects {full['num_mel_bins']} mel bins, the frontend gives {NUM_MEL_BINS}")
    max_length = full["max_length"]
    frontend = get_frontend("ast") if max_length == AST_PARAMS["max_length"] else get_frontend("ast", max_length=max_length)
    ident = dict(
        name="ast",
        frontend=frontend,
        embedding_dim=full["hidden_size"],
        precision=precision,
        weights=info,
        config=full,
        device=device,
        seed=seed,
    )

    def build() -> ASTBackbone:
        model = _build_model(resolved, overrides, attention, seed)
        model.eval().to(device)
        built = {k: getattr(model.config, k) for k in ARCH_DEFAULTS}
        return ASTBackbone(model=model, attention=attention, **{**ident, "config": built})

    return LazyBackbone(build=build, **ident)


def _build_model(resolved, overrides: dict, attention: str, seed: int):
    """The transformers ``ASTModel``: random (seeded) or loaded from the resolved folder."""
    import torch
    from transformers import ASTConfig, ASTModel

    if resolved.kind == "none":
        cfg = ASTConfig(**{**ARCH_DEFAULTS, **overrides})
        with random_init_context(seed), quiet_hf_loading():
            model = ASTModel(cfg)
        model.set_attn_implementation(attention)
        return model
    folder = resolved.path
    try:
        with quiet_hf_loading():
            model, loading = ASTModel.from_pretrained(
                str(folder),
                attn_implementation=attention,
                dtype=torch.float32,
                local_files_only=True,
                output_loading_info=True,
                **overrides,
            )
    except Exception as e:  # transformers raises OSError/ValueError/RuntimeError/KeyError for bad folders
        reason = one_line(e, 200)
        raise ConfigError(f"weights {folder}: not loadable as an AST ({reason})") from None
    if model.config.model_type != "audio-spectrogram-transformer":
        raise ConfigError(f"weights {folder}: holds a {model.config.model_type!r} model, not an AST")
    bad = sorted(loading.get("missing_keys", [])) + sorted(str(k) for k in loading.get("mismatched_keys", []))
    if bad:
        raise ConfigError(f"weights {folder}: do not fit the AST architecture ({len(bad)} tensors missing or mis-shaped, e.g. {bad[0]})")
    extra = sorted(k for k in loading.get("unexpected_keys", []) if not k.startswith("classifier."))
    if extra:
        log.warning("weights %s: %d tensors not used by ASTModel (e.g. %s)", folder, len(extra), extra[0])
    return model
