"""``humwatch export``: a monitor for small devices, its network as ONNX, run without PyTorch.

``export_monitor(MONITOR, OUT)`` writes::

    OUT/monitor.json        the monitor's, unchanged (threshold, its rule, audio settings)
    OUT/method/             the monitor's saved method, unchanged (the detector's arrays, settings)
    OUT/onnx/model.onnx     the method's network (what :meth:`Method.export_network` gives), batch dynamic
    OUT/export.json         what the ONNX model takes and gives, its frontend, precision, the export check
    OUT/manifest.json       the SHA-256 of every file above (:func:`humwatch.io.write_manifest`), last

so OUT is still a monitor that ``humwatch score`` runs with PyTorch (``--runtime torch``), and one that
it runs with ONNX Runtime (:mod:`humwatch.onnxrun`) when PyTorch is absent or ``--runtime onnx`` is
given. A changed, missing or added file is refused on load like any monitor's.

What the network is, per method: ``embed-detect``: the backbone (AST, ResNeXt, the autoencoder's
encoder, the weight-free ``features`` statistics, which are a small torch module too), its
embeddings scored by the saved detector(s) in numpy; ``idnet`` and ``aux-finetune`` (``score=knn``):
the trained network, its embeddings scored by the saved detector(s); ``autoencoder``: the network and
its mean squared reconstruction error; ``finetune``: backbone, head and sigmoid. ``embed-fusion``,
``score-fusion`` and ``score=classifier`` are refused with a one-line error. The frontend (log-mel
in numpy/librosa) is not in the graph: it runs before it, exactly as with PyTorch.

``int8=True`` quantises the weights of the matrix products and convolutions to int8 (ONNX Runtime's
dynamic quantisation: activations quantised per batch at run time). The export is checked: ONNX
Runtime's fp32 output on two generated clips must equal PyTorch's within :data:`TOLERANCE` (relative
to the output's largest value), and the int8 model's deviation is recorded in ``export.json``.

The network is exported in fp32 even when the monitor ran in bf16 (autocast is not part of a
graph); its scores then differ from the monitor's own by bf16 rounding.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from humwatch.errors import ConfigError, one_line
from humwatch.onnxrun import EXPORT_FILE, FORMAT

FORMAT_VERSION = 1
MODEL_FILE = "onnx/model.onnx"
FORMATS = ("onnx",)
TOLERANCE = 1e-4
"""Largest |ONNX - PyTorch| allowed at export, relative to the largest |PyTorch| output value (fp32)."""


def _wrap(net: dict):
    """A torch module ``x -> output`` for the network's output kind (see the module docstring)."""
    import torch
    from torch import nn

    class Exported(nn.Module):
        def __init__(self, module, kind):
            super().__init__()
            self.module = module
            self.kind = kind

        def forward(self, x):
            y = self.module(x)
            if self.kind == "reconstruction":
                return ((y - x) ** 2).mean(dim=tuple(range(1, x.dim())))
            if self.kind == "logit":
                return torch.sigmoid(y)
            return y

    if net.get("output") not in ("embedding", "reconstruction", "logit"):
        raise ConfigError(f"export: unknown network output {net.get('output')!r}")  # a method's bug
    return Exported(net["module"], net["output"]).eval().float().cpu()


def _sample_inputs(frontend, audio, n: int = 2) -> np.ndarray:
    """Frontend outputs of ``n`` generated clips of the monitor's length (tones and noise, seeded)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(round(audio.seconds * audio.sample_rate))) / audio.sample_rate
    ys = [(0.2 * np.sin(2 * np.pi * (120 + 90 * k) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32) for k in range(n)]
    return frontend.batch(ys).astype(np.float32)


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {s.get_inputs()[0].name: x})[0])


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-12))


def _to_onnx(module, x: np.ndarray, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.from_numpy(x),),
                str(path),
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes={"x": {0: batch}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as e:  # the exporter's errors are many and long: one line, the network named
        text = one_line(e, 300)
        raise ConfigError(f"export: the network could not be written as ONNX ({text})") from None


def _quantize(src: Path, dst: Path) -> None:
    """int8 weights (per output channel), activations quantised at run time; after ONNX Runtime's
    recommended pre-processing (shape inference and graph optimisation). Weights use 7 bits
    (``reduce_range``): on x86 CPUs without VNNI (AVX2 only) ONNX Runtime's uint8 x int8 kernels
    saturate with full-range weights; here that made the autoencoder's outputs 6.7 % off against
    under 5 % with the reduced range, and an exported monitor may run on any such CPU."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = src.with_name("model.prepared.onnx")
    quant_pre_process(str(src), str(prepared))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice through the root logger
    try:
        quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)


def write_onnx(net: dict, x: np.ndarray, path: str | Path, *, int8: bool = False) -> dict:
    """Write ``net`` (what :meth:`Method.export_network` gives) as the ONNX model ``path``, checked on
    the sample batch ``x``: ONNX Runtime's fp32 output must equal PyTorch's within
    :data:`TOLERANCE`; with ``int8`` the file holds the quantised model and its deviation is
    reported. Returns ``{"inputs", "fp32_relative_error", "tolerance"(, "int8_relative_error")}``."""
    import torch

    path = Path(path)
    module = _wrap(net)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).float().numpy()
    _to_onnx(module, x, path)
    got = _run_onnx(path, x)
    err = _relative_error(got, want)
    if got.shape != want.shape or not err <= TOLERANCE:
        raise ConfigError(f"export: ONNX Runtime's output differs from PyTorch's (relative error {err:.2g} > {TOLERANCE:g})")
    check = {"inputs": int(x.shape[0]), "fp32_relative_error": err, "tolerance": TOLERANCE}
    if int8:
        fp32 = path.with_name(path.stem + ".fp32.onnx")
        os.replace(path, fp32)
        try:
            _quantize(fp32, path)
        finally:
            fp32.unlink(missing_ok=True)
        check["int8_relative_error"] = _relative_error(_run_onnx(path, x), want)
    return check


def export_monitor(
    monitor: str | Path, out: str | Path, *, fmt: str = "onnx", int8: bool = False, weights: str | None = None, overwrite: bool = False
) -> dict:
    """Write the exported monitor ``out`` (see the module docstring) from the monitor folder
    ``monitor``; returns what ``export.json`` holds. ``weights``: where the backbone's weights are
    now, as for ``humwatch score``. ``out`` is built in a hidden folder that takes its place when
    complete; one that holds files is replaced only with ``overwrite``."""
    import torch

    from humwatch._version import __version__
    from humwatch.io import MANIFEST, check_out_folder, file_sha256, staged_folder, write_json, write_manifest
    from humwatch.monitor import Monitor

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    src, out = Path(monitor), Path(out)
    if not (src / "monitor.json").is_file():
        raise ConfigError(f"{src}: not a monitor folder (export takes what `humwatch fit` writes)")
    check_out_folder(out, overwrite, kind="export", inputs=[src, weights])
    mon = Monitor.load(src, weights=weights)
    net = mon.method.export_network()
    frontend = net["frontend"]
    from humwatch.features import FRONTENDS

    if frontend.name not in FRONTENDS:  # the exported runtime rebuilds its frontend from that table (no transformers)
        raise ConfigError(
            f"{src}: its {frontend.name} frontend (the model's own feature extractor) cannot run in an "
            "exported monitor; score it with PyTorch (humwatch score) instead"
        )
    x = _sample_inputs(frontend, mon.audio)
    with staged_folder(out, kind="export") as tmp:
        # the monitor as it is (its method, reference, monitor.json), then the network beside it
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=lambda d, names: [MANIFEST] if Path(d) == src else [])
        check = write_onnx(net, x, tmp / MODEL_FILE, int8=int8)
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "runtime": "onnx",
            "model": MODEL_FILE,
            "model_sha256": file_sha256(tmp / MODEL_FILE),  # checked apart from the manifest (onnxrun)
            "precision": "int8" if int8 else "fp32",
            "source_precision": mon.method.info().get("precision", "fp32"),
            "method": mon.method.name,
            "output": "embedding" if net["output"] == "embedding" else "score",
            "input": {"name": "input", "shape": [None, *x.shape[1:]], "dtype": "float32"},
            "frontend": {"name": frontend.name, "params": frontend.params, "key": frontend.key},
            "batch_size": int(net.get("batch_size", 8)),
            "detector_state": net.get("detector_state"),
            "check": check,
            "source": str(src),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "humwatch_version": __version__,
            "torch_version": torch.__version__,
        }
        write_json(tmp / EXPORT_FILE, doc)
        write_manifest(tmp)
    return doc
