"""Scoring a monitor's network with OpenVINO (``--runtime openvino``), without PyTorch.

:class:`OpenvinoMethod` is :class:`humwatch.onnxrun.OnnxMethod` with another ``_open``/``_run``:
the reader, the frontend (numpy/librosa) and the saved detector are the same; the network runs on
OpenVINO's CPU plugin. What it runs:

* a monitor exported with ``humwatch export --format openvino``: ``openvino/model.xml`` + ``.bin``
  (fp32 weights, or int8 by NNCF post-training quantisation calibrated on the monitor's normal
  clips, ``--int8 --data DIR``);
* a monitor exported as ONNX: the ``.onnx`` file, read by OpenVINO directly;
* a plain monitor (``humwatch fit``'s): its network converted once (needs PyTorch, that once) and
  cached in the embedding cache's ``openvino/`` folder, keyed by the monitor's manifest
  (:func:`humwatch.convert.cached_openvino`); the monitor folder is sealed, so nothing is added to it.

It is compiled with :func:`compute_precision`: bf16 where the CPU does bf16 natively (the rule of
``--precision auto``, :func:`humwatch.models.precision.native_bf16`; ``HUMWATCH_BF16=0|1``
overrides) and f32 elsewhere. OpenVINO would pick bf16 on such a CPU by itself; humwatch sets the
hint either way, so ``HUMWATCH_BF16=0`` gives f32 everywhere. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from humwatch.errors import ConfigError, one_line
from humwatch.onnxrun import OnnxMethod, read_export

MODEL_FILE = "openvino/model.xml"
WEIGHTS_FILE = "openvino/model.bin"


def compute_precision() -> str:
    """``bf16`` where the CPU does bf16 natively, else ``f32`` (OpenVINO's names)."""
    from humwatch.models.precision import native_bf16

    return "bf16" if native_bf16("cpu") else "f32"


def compile_model(model, precision: str | None = None, threads: int | None = None):
    """``model`` (an ``openvino.Model``, or the path of an ``.xml`` or ``.onnx`` file) compiled for the
    CPU in ``precision`` (``f32``/``bf16``; None: :func:`compute_precision`)."""
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": precision or compute_precision(), "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    core = ov.Core()
    try:
        if not isinstance(model, ov.Model):
            model = core.read_model(str(model))
        return core.compile_model(model, "CPU", config)
    except Exception as e:  # OpenVINO raises RuntimeError with long multi-line texts
        raise ConfigError(f"{model if isinstance(model, str | Path) else 'network'}: OpenVINO cannot run it ({one_line(e, 200)})") from None


def run_compiled(compiled, x: np.ndarray) -> np.ndarray:
    """The first output of ``compiled`` on the batch ``x`` (float32)."""
    return np.asarray(compiled(np.ascontiguousarray(x, dtype=np.float32))[0], dtype=np.float32)


class OpenvinoMethod(OnnxMethod):
    """An exported (or converted) network on OpenVINO: see the module docstring."""

    backend = "openvino"

    def _open(self, model: Path) -> None:
        if not Path(model).is_file():
            raise ConfigError(f"{model}: no such model file (export the monitor again)")
        self.compute = compute_precision()
        self.compiled = compile_model(model, self.compute)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return run_compiled(self.compiled, x)

    def info(self) -> dict:
        return {**super().info(), "compute": self.compute}

    @property
    def label(self) -> str:
        return f"{self.name} (openvino {self.doc['precision']}, {self.compute} compute)"


def load_exported(directory: str | Path, audio, runtime: str = "openvino") -> OnnxMethod:
    """The exported network of the monitor folder ``directory`` (checked by
    :func:`humwatch.onnxrun.read_export`) on ``runtime``: ``openvino`` (OpenVINO's files, or the ONNX
    model: OpenVINO reads both) or ``onnx`` (ONNX Runtime; an export for OpenVINO is refused)."""
    if runtime == "onnx":
        from humwatch.onnxrun import exported_runtime, load_onnx_method

        if exported_runtime(directory) == "openvino":
            raise ConfigError(f"{directory}: exported for OpenVINO, not ONNX; score it with --runtime openvino")
        return load_onnx_method(directory, audio)
    doc, method_doc = read_export(directory, audio)
    return OpenvinoMethod(Path(directory), doc, method_doc, audio)


def quantize(model, inputs: np.ndarray, transformer: bool = False):
    """``model`` (an ``openvino.Model``) with int8 weights and activations: NNCF's post-training
    quantisation, its activation ranges calibrated on ``inputs`` (N frontend outputs of normal clips,
    fed one at a time);
    ``transformer``: NNCF's transformer preset (keeps softmax and layer norms in float)."""
    import contextlib
    import io
    import logging

    quiet = [logging.getLogger(n) for n in ("nncf", "torch.utils.cpp_extension")]  # advice at INFO/WARNING; "no CUDA"
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        import nncf

        kw = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
        items = [np.ascontiguousarray(x[None], dtype=np.float32) for x in inputs]
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws its own progress bars there
            return nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), **kw)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
