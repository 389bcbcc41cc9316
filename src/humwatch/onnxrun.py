"""Scoring an exported monitor (:mod:`humwatch.export`) with ONNX Runtime, without PyTorch.

What runs: the monitor's clip reader (soundfile, numpy), the frontend (numpy/librosa; AST's too:
:func:`humwatch.features.ast_features`), the network on ONNX Runtime, and for ``embed-detect`` the saved
detector (numpy/scikit-learn). Nothing here imports torch, so ``humwatch score`` works on a device
where only ``numpy soundfile librosa scikit-learn safetensors transformers onnxruntime typer rich``
are installed (``pip install --no-deps humwatch`` plus those).

``--runtime``: ``auto`` (an export for OpenVINO runs on OpenVINO where it is installed; an ONNX
export on ONNX Runtime when PyTorch is not installed; PyTorch otherwise), ``onnx`` (ONNX Runtime; the
monitor must be exported as ONNX), ``openvino`` (OpenVINO, :mod:`humwatch.ovrun`: an export of either
format, or a plain monitor whose network is converted once and cached) or ``torch``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from humwatch.errors import ConfigError, one_line

RUNTIMES = ("auto", "torch", "onnx", "openvino")
EXPORT_FILE = "export.json"
FORMAT = "humwatch-export"


def installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def torch_installed() -> bool:
    return installed("torch")


def is_exported(directory: str | Path) -> bool:
    return (Path(directory) / EXPORT_FILE).is_file()


def exported_runtime(directory: str | Path) -> str | None:
    """``onnx`` or ``openvino``: what the monitor folder ``directory`` was exported for (None: not
    exported). A damaged export.json reads as ``onnx`` here; loading it says what is wrong."""
    if not is_exported(directory):
        return None
    import json

    try:
        doc = json.loads((Path(directory) / EXPORT_FILE).read_text())
    except (OSError, ValueError):
        return "onnx"
    return "openvino" if isinstance(doc, dict) and doc.get("runtime") == "openvino" else "onnx"


def choose_runtime(directory: str | Path, runtime: str = "auto") -> str:
    """``torch``, ``onnx`` or ``openvino`` for the monitor folder ``directory`` (see the module docstring)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    exported = exported_runtime(directory)
    if runtime == "onnx" and exported != "onnx":
        what = (
            "exported for OpenVINO, not ONNX (score it with --runtime openvino)"
            if exported
            else f"not an exported monitor (no {EXPORT_FILE})"
        )
        raise ConfigError(f"{directory}: {what}; write one with `humwatch export MONITOR --format onnx --out DIR`")
    if runtime == "openvino" and not installed("openvino"):
        raise ConfigError(f"{directory}: OpenVINO is not installed here (pip install openvino); choose another --runtime")
    if runtime == "openvino" and not exported and not (Path(directory) / "monitor.json").is_file():
        raise ConfigError(
            f"{directory}: --runtime openvino takes a monitor folder (monitor.json); a saved method runs with --runtime torch"
        )
    if runtime == "auto":
        if exported == "openvino" and installed("openvino"):
            runtime = "openvino"
        else:
            runtime = "onnx" if exported == "onnx" and not torch_installed() else "torch"
    if runtime == "torch" and not torch_installed():
        raise ConfigError(
            f"{directory}: PyTorch is not installed here; export the monitor (`humwatch export`) and score the exported folder with ONNX Runtime"
        )
    return runtime


class OnnxMethod:
    """What a :class:`~humwatch.monitor.Monitor` scores with (a :class:`~humwatch.methods.base.Scorer`:
    ``audio``, ``score``, ``readings``, ``info``), running the exported network. A subclass for
    another runtime overrides :meth:`_open` (load the model file) and :meth:`_run` (one batch)."""

    backend = "onnx"
    natural_threshold = None

    def __init__(self, directory: Path, doc: dict, method_doc: dict, audio, model: Path | None = None):
        from humwatch.features import get_frontend

        self.directory = directory
        self.doc = doc
        self.name = method_doc["method"]
        self.method_info = dict(method_doc.get("info") or {})
        self.audio = audio
        fe = doc["frontend"]
        self.frontend = get_frontend(fe["name"], **fe["params"])
        if self.frontend.key != fe["key"]:
            raise ConfigError(
                f"{directory / EXPORT_FILE}: frontend {fe['name']} of this humwatch is not the one exported "
                f"(key {self.frontend.key} vs {fe['key']}); export the monitor again"
            )
        self._open(model or directory / doc["model"])
        self.detector = None
        if doc["output"] == "embedding":
            from humwatch.methods.embedding import load_detector

            state = method_doc["state"]
            where = doc.get("detector_state")  # the key of the detector's state in the method's (idnet: "scorer")
            self.detector = load_detector(directory / "method", state.get(where) or {} if where else state)

    def _open(self, model: Path) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... kinds
            raise ConfigError(f"{model}: not a usable ONNX model ({one_line(e, 200)})") from None
        self.input = self.session.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0])

    def readings(self, clips, runtime=None) -> dict[str, np.ndarray]:
        from humwatch.methods.base import scores_at
        from humwatch.runtime import Runtime, current

        clips = list(clips)
        reader = (runtime or current() or Runtime()).reader(self.audio)
        kept, outs = [], []
        for k, xs in reader.batches(clips, self.doc["batch_size"], f"scoring ({self.backend})", self.frontend):
            kept += k
            outs.append(self._run(np.stack(xs)))
        if not outs:
            return {"score": np.full(len(clips), np.nan)}
        y = np.concatenate(outs)
        if self.detector is None:
            return {"score": scores_at(clips, kept, y.reshape(-1))}
        return {k: scores_at(clips, kept, v) for k, v in self.detector.readings(y, kept).items()}

    def score(self, clips, runtime=None) -> np.ndarray:
        return self.readings(clips, runtime)["score"]

    def info(self) -> dict:
        return {**self.method_info, "runtime": self.backend, "precision": self.doc["precision"]}

    @property
    def label(self) -> str:
        return f"{self.name} ({self.backend} {self.doc['precision']})"


def read_export(directory: str | Path, audio) -> tuple[dict, dict]:
    """``(export.json, method.json)`` of the exported monitor folder ``directory`` (whose manifest the
    caller checked), every field checked, the model's files' SHA-256 too (``model_sha256``, and
    ``weights_sha256`` of an OpenVINO model's ``weights`` file); ``audio``: the monitor's
    :class:`~humwatch.audio.AudioSettings`, which must be the method's."""
    from humwatch.io import file_sha256, read_json_doc
    from humwatch.methods.base import check_method_doc, read_method_json

    d = Path(directory)
    doc = read_json_doc(
        d / EXPORT_FILE,
        FORMAT,
        {"model": str, "model_sha256": str, "output": str, "frontend": dict, "batch_size": int, "precision": str},
        missing=f"{d}: not an exported monitor (no {EXPORT_FILE})",
    )
    if doc["output"] not in ("embedding", "score") or doc["batch_size"] < 1:
        raise ConfigError(f"{d / EXPORT_FILE}: output must be embedding or score and batch_size positive")
    if not isinstance(doc.get("detector_state") or "", str):
        raise ConfigError(f"{d / EXPORT_FILE}: detector_state must be a key of the method's state or null")
    fe = doc["frontend"]
    if not (isinstance(fe.get("name"), str) and isinstance(fe.get("params"), dict) and isinstance(fe.get("key"), str)):
        raise ConfigError(f"{d / EXPORT_FILE}: frontend must have a name, params and key")
    files = [("model", "model_sha256")]
    if doc.get("runtime") == "openvino":
        if not (isinstance(doc.get("weights"), str) and isinstance(doc.get("weights_sha256"), str)):
            raise ConfigError(f"{d / EXPORT_FILE}: an OpenVINO export names its weights file and their SHA-256")
        files.append(("weights", "weights_sha256"))
    for key, sha in files:
        f = (d / doc[key]).resolve()
        if d.resolve() not in f.parents or not f.is_file():
            raise ConfigError(f"{d / EXPORT_FILE}: {key} {doc[key]!r} is not a file inside the monitor")
        if file_sha256(f) != doc[sha]:
            raise ConfigError(f"{f}: the network differs from the SHA-256 {EXPORT_FILE} records (changed after export)")
    method_doc = read_method_json(d / "method")
    if check_method_doc(d / "method", method_doc) != audio:
        raise ConfigError(f"{d / 'method'}: the method was fitted on other audio settings than the monitor's")
    return doc, method_doc


def load_onnx_method(directory: str | Path, audio) -> OnnxMethod:
    """The exported network of the monitor folder ``directory`` (whose manifest the caller checked),
    reading clips with ``audio`` (the monitor's :class:`~humwatch.audio.AudioSettings`)."""
    doc, method_doc = read_export(directory, audio)
    return OnnxMethod(Path(directory), doc, method_doc, audio)
