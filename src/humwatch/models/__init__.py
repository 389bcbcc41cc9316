"""Backbones: networks that turn a clip's frontend output into one embedding.

``create_backbone(name, weights="default", precision="auto", config=None)`` builds one by name
(``list_backbones()``: ``ast``, ``resnext101_32x8d``, and whatever else registered itself with
``@register_backbone``); ``plan_backbone`` gives the same backbone with its network built only when
first needed (its cache key is known before). Importing this package is cheap: torch, timm and transformers are
imported only when a backbone is built.

Example::

    >>> from humwatch.models import create_backbone
    >>> bb = create_backbone("resnext101_32x8d", weights="none")   # RANDOM INIT, said out loud
    >>> print(bb.weights.describe())
    RANDOM INIT (no pretrained weights): seed 0
"""

from humwatch.models.lazy import LazyBackbone
from humwatch.models.precision import PRECISION_CHOICES, PRECISIONS, resolve_precision
from humwatch.models.registry import Backbone, create_backbone, list_backbones, plan_backbone, register_backbone
from humwatch.models.weights import RANDOM_INIT_BANNER, WeightsInfo

TINY_CONFIGS: dict[str, dict] = {
    "ast": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64},
    "resnext101_32x8d": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "cardinality": 2, "base_width": 32, "stem_width": 8},
}
"""The one table of tiny architectures (random-init demos, ``reproduce --synthetic``, ``explain --tiny``).
AST: 3 transformer layers of width 32 (2 heads, MLP 64) on the real 1024 x 128 input (32-d
embedding). ResNeXt: one bottleneck per stage, stage widths 8-16-32-64, cardinality 2, an 8-wide
stem, on the real 3 x 128 x 1251 input (256-d embedding). Both keep their backbone's block
structure (patch embedding + layers + final norm; stem + layer1-4), so the fine-tuning rules
(top 2 blocks trainable at lr/10 and lr/100, the rest frozen) apply unchanged."""

__all__ = [
    "PRECISIONS",
    "PRECISION_CHOICES",
    "LazyBackbone",
    "plan_backbone",
    "resolve_precision",
    "TINY_CONFIGS",
    "RANDOM_INIT_BANNER",
    "Backbone",
    "WeightsInfo",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
