"""Converting a method's network (:meth:`Method.export_network`) for another runtime, checked
against PyTorch: ONNX (:func:`write_onnx`, ONNX Runtime's int8) and OpenVINO (:func:`write_openvino`,
NNCF's int8), and a plain monitor's network converted once for ``--runtime openvino``
(:func:`cached_openvino`). :mod:`humwatch.export` writes exported monitors with them; nothing here
knows monitors, so :mod:`humwatch.monitor` can use it.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from humwatch.errors import ConfigError, one_line

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


def write_openvino(
    net: dict, x: np.ndarray, path: str | Path, *, calibration: np.ndarray | None = None, onnx_model: str | Path | None = None
) -> dict:
    """Write ``net`` as the OpenVINO model ``path`` (``.xml`` + ``.bin``): through the checked ONNX
    model of :func:`write_onnx`, converted by ``openvino.convert_model`` (fp32 weights; a graph with an
    op OpenVINO's ONNX reader lacks, such as idnet's STFT: the torch module, traced on ``x``), its f32
    output checked against PyTorch's on ``x`` as ONNX Runtime's is. ``calibration`` (frontend outputs
    of normal clips): the model is quantised to int8 by NNCF, calibrated on them, and its deviation on
    ``x`` reported. ``onnx_model``: that ONNX file of ``net`` (written by :func:`write_onnx`, fp32) is
    converted instead of writing it again. Returns :func:`write_onnx`'s check (not with
    ``onnx_model``) plus ``openvino_f32_relative_error`` (and ``int8_relative_error``)."""
    import openvino as ov
    import torch

    from humwatch.ovrun import compile_model, quantize, run_compiled

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = Path(onnx_model) if onnx_model else path.with_name(path.stem + ".tmp.onnx")
    module = _wrap(net)
    try:
        check = {} if onnx_model else write_onnx(net, x, onnx_path)
        try:
            model, check["converted_from"] = ov.convert_model(str(onnx_path)), "onnx"
        except Exception as e:  # an op OpenVINO's ONNX reader lacks (idnet's STFT): its PyTorch frontend, traced on x
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    model, check["converted_from"] = ov.convert_model(module, example_input=torch.from_numpy(x)), "torch"
            except Exception:  # OpenVINO's conversion errors are long: one line
                raise ConfigError(f"export: OpenVINO could not convert the network ({one_line(e, 300)})") from None
    finally:
        if not onnx_model:
            onnx_path.unlink(missing_ok=True)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).float().numpy()
    got = run_compiled(compile_model(model, "f32"), x)
    err = _relative_error(got, want)
    if got.shape != want.shape or not err <= TOLERANCE:
        raise ConfigError(f"export: OpenVINO's output differs from PyTorch's (relative error {err:.2g} > {TOLERANCE:g})")
    check["openvino_f32_relative_error"] = err
    if calibration is not None:
        model = quantize(model, calibration, transformer=net["frontend"].name == "ast")
        check["int8_relative_error"] = _relative_error(run_compiled(compile_model(model, "f32"), x), want)
        check["calibration_windows"] = int(len(calibration))
    ov.save_model(model, str(path), compress_to_fp16=False)
    return check


def cached_openvino(directory: str | Path, method, audio, cache_dir: str | Path | None = None):
    """The loaded method of the plain monitor folder ``directory`` as an
    :class:`~humwatch.ovrun.OpenvinoMethod` (``--runtime openvino`` without an export): its network
    converted as :func:`write_openvino` converts it (needs PyTorch), once: kept in
    ``cache_dir/openvino/<key>/`` (the key: the monitor's manifest, humwatch's and OpenVINO's
    versions; the sealed monitor folder gets nothing added). ``cache_dir`` None: converted at every load."""
    import tempfile

    import openvino as ov

    from humwatch._version import __version__
    from humwatch.features import FRONTENDS
    from humwatch.io import file_sha256
    from humwatch.methods.base import read_method_json
    from humwatch.ovrun import OpenvinoMethod

    d = Path(directory)
    net = method.export_network()
    frontend = net["frontend"]
    if frontend.name not in FRONTENDS:
        raise ConfigError(
            f"{d}: its {frontend.name} frontend (the model's own feature extractor) cannot run on OpenVINO; use --runtime torch"
        )
    doc = {
        "model": "model.xml",
        "output": "embedding" if net["output"] == "embedding" else "score",
        "frontend": {"name": frontend.name, "params": frontend.params, "key": frontend.key},
        "batch_size": int(net.get("batch_size", 8)),
        "detector_state": net.get("detector_state"),
        "precision": "fp32",
    }
    method_doc = read_method_json(d / "method")
    key = file_sha256(d / "manifest.json")[:24] + f"-{__version__}-{ov.get_version().split('-')[0]}"

    def convert(folder: Path) -> None:
        write_openvino(net, _sample_inputs(frontend, audio), folder / "model.xml")

    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="humwatch-ov-") as tmp:
            convert(Path(tmp))
            return OpenvinoMethod(d, doc, method_doc, audio, model=Path(tmp) / "model.xml")
    target = Path(cache_dir) / "openvino" / key
    if not (target / "model.xml").is_file() or not (target / "model.bin").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
        try:
            convert(tmp)
            try:
                os.replace(tmp, target)  # whole or not at all; another process may have won the race
            except OSError:
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return OpenvinoMethod(d, doc, method_doc, audio, model=target / "model.xml")
