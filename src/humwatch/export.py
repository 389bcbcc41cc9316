"""``humwatch export``: a monitor for small devices, its network as ONNX or OpenVINO, run without PyTorch.

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

``fmt="openvino"`` writes ``openvino/model.xml`` + ``model.bin`` instead of the ONNX file: the same
checked ONNX graph converted by ``openvino.convert_model`` (weights kept in fp32), checked again:
OpenVINO's f32 output must equal PyTorch's within :data:`TOLERANCE`. OpenVINO compiles it in bf16
where the CPU does bf16 natively (:mod:`humwatch.ovrun`). With ``int8`` it is quantised by NNCF's
post-training quantisation (weights and activations), the activation ranges calibrated on the
monitor's own normal clips (``data``: the dataset it was fitted on; its normal recordings' windows,
up to :data:`CALIBRATION_WINDOWS`). A plain monitor scored with ``--runtime openvino`` has the same
conversion done once and cached (:func:`humwatch.convert.cached_openvino`).
"""

from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path

import numpy as np

from humwatch.convert import TOLERANCE, _sample_inputs, write_onnx, write_openvino  # noqa: F401 (TOLERANCE, write_onnx: public here too)
from humwatch.errors import ConfigError
from humwatch.onnxrun import EXPORT_FILE, FORMAT

FORMAT_VERSION = 1
MODEL_FILE = "onnx/model.onnx"
FORMATS = ("onnx", "openvino")
CALIBRATION_WINDOWS = 300
"""At most this many windows of normal clips calibrate OpenVINO int8 (NNCF's own default subset size)."""


def calibration_inputs(monitor, data: str | Path, limit: int = CALIBRATION_WINDOWS) -> np.ndarray:
    """Frontend outputs of up to ``limit`` windows of the normal recordings of the dataset ``data``
    (read as ``humwatch fit --data`` reads it), as ``monitor`` windows and reads them."""
    from humwatch.data import load_dataset
    from humwatch.data.clips import expand_windows
    from humwatch.errors import DatasetError
    from humwatch.runtime import Runtime

    normal = [c for c in load_dataset(data) if c.label == 0]
    if not normal:
        raise DatasetError(f"{data}: no normal recordings to calibrate int8 on")
    windows = expand_windows(normal, monitor.audio.seconds or 10.0, monitor.hop)
    step = max(1, len(windows) // limit)
    reader = Runtime(on_bad="skip", progress=False).reader(monitor.audio)
    frontend = monitor.method.export_network()["frontend"]
    xs = [x for _, batch in reader.batches(windows[::step][:limit], 8, "calibration", frontend) for x in batch]
    if not xs:
        raise DatasetError(f"{data}: none of its normal recordings could be read to calibrate int8")
    return np.stack(xs).astype(np.float32)


def export_monitor(
    monitor: str | Path,
    out: str | Path,
    *,
    fmt: str = "onnx",
    int8: bool = False,
    weights: str | None = None,
    overwrite: bool = False,
    data: str | Path | None = None,
) -> dict:
    """Write the exported monitor ``out`` (see the module docstring) from the monitor folder
    ``monitor``; returns what ``export.json`` holds. ``weights``: where the backbone's weights are
    now, as for ``humwatch score``; ``data``: the dataset the monitor was fitted on, whose normal
    clips calibrate OpenVINO int8 (needed there only). ``out`` is built in a hidden folder that
    takes its place when complete; one that holds files is replaced only with ``overwrite``."""
    import torch

    from humwatch._version import __version__
    from humwatch.io import MANIFEST, check_out_folder, file_sha256, staged_folder, write_json, write_manifest
    from humwatch.monitor import Monitor

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    src, out = Path(monitor), Path(out)
    if not (src / "monitor.json").is_file():
        raise ConfigError(f"{src}: not a monitor folder (export takes what `humwatch fit` writes)")
    openvino = fmt == "openvino"
    if openvino and int8 and data is None:
        raise ConfigError(
            "--int8 with --format openvino calibrates on the monitor's normal clips: pass --data (the dataset it was fitted on)"
        )
    if data is not None and not (openvino and int8):
        raise ConfigError("--data is for --format openvino --int8 only (ONNX int8 needs no calibration clips)")
    if openvino:
        from humwatch.onnxrun import installed

        if not installed("openvino") or (int8 and not installed("nncf")):
            raise ConfigError("--format openvino needs the openvino package (and nncf for --int8): pip install openvino nncf")
    check_out_folder(out, overwrite, kind="export", inputs=[src, weights, data])
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
    calibration = calibration_inputs(mon, data) if openvino and int8 else None
    from humwatch.ovrun import MODEL_FILE as OV_MODEL
    from humwatch.ovrun import WEIGHTS_FILE as OV_WEIGHTS

    model_file = OV_MODEL if openvino else MODEL_FILE
    with staged_folder(out, kind="export") as tmp:
        # the monitor as it is (its method, reference, monitor.json), then the network beside it
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=lambda d, names: [MANIFEST] if Path(d) == src else [])
        if openvino:
            check = write_openvino(net, x, tmp / OV_MODEL, calibration=calibration)
        else:
            check = write_onnx(net, x, tmp / MODEL_FILE, int8=int8)
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "runtime": fmt,
            "model": model_file,
            "model_sha256": file_sha256(tmp / model_file),  # checked apart from the manifest (onnxrun)
            **({"weights": OV_WEIGHTS, "weights_sha256": file_sha256(tmp / OV_WEIGHTS)} if openvino else {}),
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
        if openvino:
            import openvino as ov

            doc["openvino_version"] = ov.get_version()
        write_json(tmp / EXPORT_FILE, doc)
        write_manifest(tmp)
    return doc
