"""What the Audio Spectrogram Transformer attends to.

AST cuts its 128 x 1024 (mel bins x frames) input into 16 x 16 patches every ``frequency_stride``
bins and ``time_stride`` frames (10 and 10 by default: a grid of f_dim x t_dim = 12 x 101 patches),
and puts two class tokens (CLS and distillation) in front of them. Token ``2 + f * t_dim + t`` is
the patch in frequency row ``f`` and time column ``t`` (the order of ``Conv2d(...).flatten(2)``).

* :func:`mean_attention_distance` - for each head, how far (in input pixels) a patch looks on
  average: the attention weights times the distance between the query patch's centre and each key
  patch's centre, summed over keys and averaged over query patches (Dosovitskiy et al. 2021, Fig. 7;
  the study's Fig. 5). The class tokens have no place on the grid, so they are dropped as queries and
  as keys and each patch's remaining attention is renormalised to sum to 1 (``renormalize=False``
  keeps the raw weights, i.e. counts attention to the class tokens as distance 0).
* :func:`class_token_map` - the class tokens' attention over the patches of one layer, averaged over
  heads (and over the two class tokens), as an f_dim x t_dim grid.
* :func:`attention_rollout` - Abnar & Zuidema (2020): the product over layers of the head-averaged
  attention plus the identity (for the residual path), rows renormalised, so the class tokens' row
  says how much each patch reaches them through all layers.
* :func:`to_input_grid` - a patch grid interpolated onto the model's input pixels (128 x 1024),
  each patch's value sitting at its centre.

Attention weights are only returned by the eager attention code: transformers 5.x gives none under
SDPA, so :func:`eager_attention` switches a model to eager for the duration of a call.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from humwatch.errors import ConfigError
from humwatch.settings import Real, check_value

N_CLASS_TOKENS = 2
"""AST's CLS and distillation tokens, in front of the patches."""


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class PatchGrid:
    """Where AST's patches sit on its input (pixels: mel bins down, frames across)."""

    n_mels: int = 128
    max_length: int = 1024
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10

    @property
    def f_dim(self) -> int:
        return (self.n_mels - self.patch_size) // self.frequency_stride + 1

    @property
    def t_dim(self) -> int:
        return (self.max_length - self.patch_size) // self.time_stride + 1

    @property
    def n_patches(self) -> int:
        return self.f_dim * self.t_dim

    @property
    def input_shape(self) -> tuple[int, int]:
        """(mel bins, frames): the spectrogram the maps are drawn on."""
        return self.n_mels, self.max_length

    def coords(self) -> np.ndarray:
        """Patch centres in input pixels, [n_patches, 2] as (frequency, time), in token order."""
        return patch_coordinates(self.f_dim, self.t_dim, self.patch_size, self.frequency_stride, self.time_stride)

    @classmethod
    def from_config(cls, config) -> "PatchGrid":
        """The grid of a Hugging Face ``ASTConfig`` (or anything with the same attributes)."""
        try:
            return cls(
                n_mels=int(config.num_mel_bins),
                max_length=int(config.max_length),
                patch_size=int(config.patch_size),
                frequency_stride=int(config.frequency_stride),
                time_stride=int(config.time_stride),
            )
        except AttributeError as e:
            raise ConfigError(f"not an AST config: {e}") from None


def patch_coordinates(f_dim: int, t_dim: int, patch_size: int = 16, frequency_stride: int = 10, time_stride: int = 10) -> np.ndarray:
    """Centres of an f_dim x t_dim patch grid in input pixels, [f_dim * t_dim, 2] as (freq, time).

    Row ``f * t_dim + t`` is the patch starting at pixel (f * frequency_stride, t * time_stride);
    its centre is ``start + (patch_size - 1) / 2`` in pixel-index units.
    """
    if min(f_dim, t_dim, patch_size, frequency_stride, time_stride) < 1:
        raise ConfigError(f"bad patch grid: f_dim={f_dim}, t_dim={t_dim}, patch={patch_size}, strides={frequency_stride},{time_stride}")
    half = (patch_size - 1) / 2.0
    f = np.arange(f_dim) * frequency_stride + half
    t = np.arange(t_dim) * time_stride + half
    ff, tt = np.meshgrid(f, t, indexing="ij")
    return np.stack([ff.ravel(), tt.ravel()], axis=1).astype(np.float64)


def pairwise_distances(coords: np.ndarray) -> np.ndarray:
    """Euclidean distance between every pair of points, [n, n]."""
    c = np.asarray(coords, dtype=np.float64)
    diff = c[:, None, :] - c[None, :, :]
    return np.sqrt((diff**2).sum(-1))


# ----------------------------------------------------------------------------- arithmetic on attention


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def patch_attention(attn, n_patches: int, renormalize: bool = True) -> np.ndarray:
    """The patch-to-patch block of ``attn`` (..., q, k), the leading special tokens dropped.

    With ``renormalize`` each query's attention over the patches is scaled to sum to 1 (a query
    that gives the patches no attention at all keeps zeros).
    """
    a = _as_numpy(attn)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ConfigError(f"attention must be (..., tokens, tokens), got shape {a.shape}")
    n_special = a.shape[-1] - n_patches
    if n_special < 0:
        raise ConfigError(f"attention over {a.shape[-1]} tokens but the grid has {n_patches} patches")
    p = a[..., n_special:, n_special:]
    if renormalize:
        s = p.sum(-1, keepdims=True)
        p = np.divide(p, s, out=np.zeros_like(p), where=s > 0)
    return p


def mean_attention_distance(attn, coords: np.ndarray, renormalize: bool = True) -> np.ndarray:
    """Mean attention distance of each head, in the units of ``coords`` (input pixels).

    ``attn``: attention weights (..., q, k), e.g. [heads, q, k] or [layers, heads, q, k], rows
    summing to 1; any tokens beyond the ``len(coords)`` patches are taken to be leading special
    (class) tokens and dropped (see :func:`patch_attention`). Returns the leading shape, e.g.
    [heads] or [layers, heads]: for each head ``mean_q sum_k a[q, k] * |c_q - c_k|``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2:
        raise ConfigError(f"coords must be [n_patches, dims], got shape {coords.shape}")
    a = _as_numpy(attn)
    n = len(coords)
    if a.ndim < 2:
        raise ConfigError(f"attention must be (..., tokens, tokens), got shape {a.shape}")
    lead = a.shape[:-2]
    flat = a.reshape((-1,) + a.shape[-2:])
    d = pairwise_distances(coords)
    out = np.empty(len(flat))
    for i, m in enumerate(flat):  # one matrix at a time: a full AST layer stack is ~1 GB at once
        p = patch_attention(m, n, renormalize)
        out[i] = np.einsum("qk,qk->q", p, d).mean()
    return out.reshape(lead)


def class_token_map(attn_layer, grid: PatchGrid, n_class_tokens: int = N_CLASS_TOKENS, renormalize: bool = True) -> np.ndarray:
    """The class tokens' attention over the patches of one layer: [heads, q, k] -> [f_dim, t_dim].

    Averaged over heads and over the class tokens; with ``renormalize`` the attention the class
    tokens pay to the patches is scaled to sum to 1 (the map then is a distribution over patches).
    """
    a = _as_numpy(attn_layer)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ConfigError(f"one layer's attention must be [heads, q, k], got shape {a.shape}")
    if a.shape[-1] != grid.n_patches + n_class_tokens:
        raise ConfigError(f"attention over {a.shape[-1]} tokens, expected {grid.n_patches} patches + {n_class_tokens} class tokens")
    rows = a[:, :n_class_tokens, n_class_tokens:].mean(axis=(0, 1))
    if renormalize and rows.sum() > 0:
        rows = rows / rows.sum()
    return rows.reshape(grid.f_dim, grid.t_dim)


def attention_rollout(attn, head_fusion: str = "mean", residual: float = 0.5) -> np.ndarray:
    """Attention rollout over layers: [layers, heads, q, k] (or a list of [heads, q, k]) -> [q, k],
    every row summing to 1.

    Each layer's heads are fused (``mean``, ``max`` or ``min``), mixed with the identity
    (``residual * I + (1 - residual) * A``, the skip connection), rows renormalised, and the layers
    multiplied from the input up.
    """
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}.get(head_fusion)
    if fuse is None:
        raise ConfigError(f"unknown head fusion {head_fusion!r} (choose from mean, max, min)")
    check_value(residual, Real(0.0, 1.0, text=False), "rollout residual")
    if not isinstance(attn, (list, tuple)):
        a = _as_numpy(attn)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4:
            raise ConfigError(f"rollout needs attention [layers, heads, q, k], got shape {a.shape}")
        attn = list(a)
    result = None
    for layer in attn:
        layer = _as_numpy(layer)
        if layer.ndim != 3 or layer.shape[-1] != layer.shape[-2]:
            raise ConfigError(f"rollout needs each layer as [heads, q, k], got shape {layer.shape}")
        n = layer.shape[-1]
        eye = np.eye(n)
        m = residual * eye + (1.0 - residual) * fuse(layer, axis=0)
        m = m / m.sum(-1, keepdims=True)
        result = m if result is None else m @ result
    if result is None:
        raise ConfigError("rollout needs at least one layer")
    return result


def rollout_map(rollout: np.ndarray, grid: PatchGrid, n_class_tokens: int = N_CLASS_TOKENS) -> np.ndarray:
    """The class tokens' rows of a rollout over the patches, [f_dim, t_dim], summing to 1."""
    r = np.asarray(rollout, dtype=np.float64)
    rows = r[:n_class_tokens, n_class_tokens:].mean(0)
    if rows.sum() > 0:
        rows = rows / rows.sum()
    return rows.reshape(grid.f_dim, grid.t_dim)


def normalize01(a: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] (a constant map becomes zeros), float32."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(np.min(a)), float(np.max(a))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise FloatingPointError("map holds non-finite values")
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros(a.shape, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def to_input_grid(patch_map: np.ndarray, grid: PatchGrid) -> np.ndarray:
    """An [f_dim, t_dim] patch map on the input's pixels, [n_mels, max_length].

    Bilinear between patch centres (the layout of :func:`patch_coordinates`), held constant beyond
    the outermost centres.
    """
    m = np.asarray(patch_map, dtype=np.float64)
    if m.shape != (grid.f_dim, grid.t_dim):
        raise ConfigError(f"patch map has shape {m.shape}, the grid is {grid.f_dim} x {grid.t_dim}")
    half = (grid.patch_size - 1) / 2.0
    fc = np.arange(grid.f_dim) * grid.frequency_stride + half
    tc = np.arange(grid.t_dim) * grid.time_stride + half
    fp = np.arange(grid.n_mels, dtype=np.float64)
    tp = np.arange(grid.max_length, dtype=np.float64)
    along_t = np.stack([np.interp(tp, tc, row) for row in m])  # [f_dim, max_length]
    return np.stack([np.interp(fp, fc, col) for col in along_t.T], axis=1)  # [n_mels, max_length]


# ----------------------------------------------------------------------------- the model


def find_ast_model(obj, required: bool = True):
    """The Hugging Face ``ASTModel`` inside ``obj`` (a Backbone, a wrapper module, or the model itself)."""
    try:
        from transformers import ASTModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        ASTModel = None
    candidates = [obj, getattr(obj, "module", None), getattr(obj, "model", None)]
    for c in candidates:
        if c is None:
            continue
        if ASTModel is not None and isinstance(c, ASTModel):
            return c
        if hasattr(c, "modules"):
            for m in c.modules():
                if ASTModel is not None and isinstance(m, ASTModel):
                    return m
                if type(m).__name__ == "ASTModel":
                    return m
    if required:
        raise ConfigError(f"{type(obj).__name__}: holds no Audio Spectrogram Transformer (ASTModel)")
    return None


@contextmanager
def eager_attention(model) -> Iterator:
    """Run ``model`` (a Hugging Face model) with eager attention, which returns attention weights."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switched = False
    if before not in (None, "eager"):
        if not hasattr(model, "set_attn_implementation"):
            raise ConfigError(f"{type(model).__name__}: uses {before} attention and cannot switch to eager")
        model.set_attn_implementation("eager")
        switched = True
    try:
        yield model
    finally:
        if switched:
            model.set_attn_implementation(before)


def attention_layers(model, x) -> list[np.ndarray]:
    """Attention weights of every layer for one input: a list of [heads, tokens, tokens] float32
    arrays (views of the model's output, no copies: a full AST gives 12 x 12 x 1214 x 1214 values).

    ``x``: one AST input, [max_length, n_mels] (the ``ast`` frontend's output) or [1, ...].
    """
    import torch

    ast = find_ast_model(model)
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] != 1:
        raise ConfigError(f"one AST input [frames, mel bins] expected, got shape {tuple(t.shape)}")
    was_training = ast.training
    ast.eval()
    try:
        with eager_attention(ast), torch.no_grad():
            p = next(ast.parameters())
            out = ast(t.to(device=p.device, dtype=p.dtype), output_attentions=True)
    finally:
        ast.train(was_training)
    att = getattr(out, "attentions", None)
    if not att:
        raise ConfigError("the AST returned no attention weights (eager attention needed)")
    return [a[0].float().cpu().numpy() for a in att]


def attention_distances(model, inputs: Iterable, renormalize: bool = True) -> np.ndarray:
    """Mean attention distance per layer and head, averaged over ``inputs``: [layers, heads] pixels."""
    ast = find_ast_model(model)
    grid = PatchGrid.from_config(ast.config)
    coords = grid.coords()
    total, n = None, 0
    for x in inputs:
        d = np.stack([mean_attention_distance(a, coords, renormalize) for a in attention_layers(ast, x)])
        total = d if total is None else total + d
        n += 1
    if n == 0:
        raise ConfigError("no clips to measure attention distances on")
    return total / n


def ast_attention_maps(model, x, layers: Iterable[int] | None = None, rollout: bool = True) -> dict[str, np.ndarray]:
    """Attention maps of one input on the input's pixels ([n_mels, max_length], each in [0, 1]).

    Keys: ``layer <k>`` (1-based) for the class tokens' head-averaged attention in each of
    ``layers`` (0-based indices; default a middle layer and the last), and ``rollout`` when asked.
    """
    ast = find_ast_model(model)
    grid = PatchGrid.from_config(ast.config)
    att = attention_layers(ast, x)
    n_layers = len(att)
    if layers is None:
        layers = default_map_layers(n_layers)
    maps: dict[str, np.ndarray] = {}
    for i in layers:
        if not -n_layers <= i < n_layers:
            raise ConfigError(f"layer {i} out of range: the AST has {n_layers} layers")
        k = i % n_layers
        maps[f"layer {k + 1}"] = normalize01(to_input_grid(class_token_map(att[k], grid), grid))
    if rollout:
        maps["rollout"] = normalize01(to_input_grid(rollout_map(attention_rollout(att), grid), grid))
    return maps


def default_map_layers(n_layers: int) -> list[int]:
    """A middle layer and the last (0-based): layers 6 and 12 of 12."""
    mid = (n_layers - 1) // 2
    return [mid, n_layers - 1] if mid != n_layers - 1 else [n_layers - 1]
