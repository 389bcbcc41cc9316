"""Backbones: networks that turn a clip's frontend output into one embedding.

``create_backbone(name, weights="default", precision="fp32", config=None)`` builds one by name
(``list_backbones()``: ``ast``, ``resnext101_32x8d``, and whatever else registered itself with
``@register_backbone``). Importing this package is cheap: torch, timm and transformers are
imported only when a backbone is built.

Example::

    >>> from asdkit.models import create_backbone
    >>> bb = create_backbone("resnext101_32x8d", weights="none")   # RANDOM INIT, said out loud
    >>> print(bb.weights.describe())
    RANDOM INIT (no pretrained weights): seed 0
"""

from asdkit.models.registry import PRECISIONS, Backbone, create_backbone, list_backbones, register_backbone
from asdkit.models.weights import RANDOM_INIT_BANNER, WeightsInfo

__all__ = [
    "PRECISIONS",
    "RANDOM_INIT_BANNER",
    "Backbone",
    "WeightsInfo",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
