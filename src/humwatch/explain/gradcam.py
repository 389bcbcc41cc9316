"""Grad-CAM of the CNN (ResNeXt) backbone with pytorch-grad-cam.

The backbone outputs an embedding, not class scores, so there is no class to explain. The target
is a scalar of the embedding instead:

* :class:`EmbeddingNormTarget` (default) - the embedding's L2 norm: which regions drive the
  features the detector sees at all;
* :class:`EmbeddingDistanceTarget` - the distance from a reference embedding (e.g. the mean of the
  normal training clips): which regions push the clip away from normal, i.e. an anomaly-score target.

The maps come from a middle block (``layer2``) and the last block (``layer4``), are ReLU'd and
min-max scaled to [0, 1] by pytorch-grad-cam and resized to the input's shape (128 x frames).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from humwatch.errors import ConfigError

DEFAULT_CAM_LAYERS = ("layer2", "layer4")


class EmbeddingNormTarget:
    """Grad-CAM target: the L2 norm of the sample's embedding."""

    def __call__(self, output):
        return output.norm()


class EmbeddingDistanceTarget:
    """Grad-CAM target: the distance of the sample's embedding from ``reference`` (D,)."""

    def __init__(self, reference):
        import torch

        self.reference = torch.as_tensor(np.asarray(reference, dtype=np.float32))

    def __call__(self, output):
        return (output - self.reference.to(output.device, output.dtype)).norm()


def find_resnet(obj, required: bool = True):
    """The ResNet/ResNeXt inside ``obj`` (a Backbone, a wrapper module or the timm model itself):
    the first module with ``layer1`` ... ``layer4``."""
    for c in (obj, getattr(obj, "module", None), getattr(obj, "model", None)):
        if c is None or not hasattr(c, "modules"):
            continue
        for m in c.modules():
            if all(hasattr(m, f"layer{i}") for i in range(1, 5)):
                return m
    if required:
        raise ConfigError(f"{type(obj).__name__}: holds no ResNet/ResNeXt (no layer1..layer4)")
    return None


def _forward_module(obj):
    """The module that maps a frontend batch to embeddings: a Backbone's ``.module``, or ``obj``."""
    m = getattr(obj, "module", None)
    if m is not None and hasattr(m, "forward"):
        return m
    if hasattr(obj, "forward"):
        return obj
    raise ConfigError(f"{type(obj).__name__}: not a torch module or backbone")


def gradcam_maps(model, x, layers: Iterable[str] = DEFAULT_CAM_LAYERS, target=None) -> dict[str, np.ndarray]:
    """Grad-CAM maps of one or more inputs for each of ``layers`` of the CNN.

    ``model``: a Backbone (its ``.module`` is run) or a module mapping [B, 3, mels, frames] to
    [B, D] embeddings with a ResNet inside. ``x``: [3, mels, frames] or [B, 3, mels, frames].
    Returns {layer name: [mels, frames] (or [B, mels, frames])} float32 in [0, 1].
    """
    import torch

    cam_class = _per_layer_gradcam()
    net = _forward_module(model)
    resnet = find_resnet(model)
    arr = np.asarray(x, dtype=np.float32)
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    if arr.ndim != 4:
        raise ConfigError(f"CNN input must be [3, mels, frames] or [B, 3, mels, frames], got shape {arr.shape}")
    names = list(layers)
    if not names:
        raise ConfigError("no CNN blocks named for Grad-CAM")
    modules = []
    for name in names:
        layer = getattr(resnet, name, None)
        if layer is None:
            raise ConfigError(f"the CNN has no block {name!r}")
        modules.append(layer)
    target = target or EmbeddingNormTarget()
    was_training = net.training
    try:
        t = torch.from_numpy(arr.copy()).to(next(net.parameters()).device)
        t.requires_grad_(True)  # gradients flow even when the backbone's weights are frozen
        with torch.enable_grad(), cam_class(model=net, target_layers=modules) as cam:
            out = cam(input_tensor=t, targets=[target] * len(arr))  # [B, layers, mels, frames]
    finally:
        net.train(was_training)
        net.zero_grad(set_to_none=True)
    out = np.nan_to_num(np.asarray(out, dtype=np.float32), nan=0.0)
    maps: dict[str, np.ndarray] = {}
    for k, name in enumerate(names):
        m = np.stack([_unit(o) for o in out[:, k]])
        maps[name] = m[0] if single else m
    return maps


def _per_layer_gradcam():
    """pytorch-grad-cam's GradCAM keeping one map per target layer (it averages them by default),
    so every block's map comes from the same forward and backward pass."""
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("Grad-CAM needs the grad-cam package (pip install grad-cam)") from None

    class PerLayerGradCAM(GradCAM):
        def aggregate_multi_layers(self, cam_per_target_layer):
            return np.concatenate(cam_per_target_layer, axis=1)

    return PerLayerGradCAM


def _unit(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(a, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)
