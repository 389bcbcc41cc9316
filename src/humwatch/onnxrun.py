"""Scoring an exported monitor (:mod:`humwatch.export`) with ONNX Runtime, without PyTorch.

What runs: the monitor's clip reader (soundfile, numpy), the frontend (numpy/librosa; AST's too:
:func:`humwatch.features.ast_features`), the network on ONNX Runtime, and for ``embed-detect`` the saved
detector (numpy/scikit-learn). Nothing here imports torch, so ``humwatch score`` works on a device
where only ``numpy soundfile librosa scikit-learn safetensors transformers onnxruntime typer rich``
are installed (``pip install --no-deps humwatch`` plus those).

``--runtime``: ``auto`` (ONNX Runtime for an exported monitor when PyTorch is not installed,
PyTorch otherwise), ``onnx`` (ONNX Runtime; the monitor must be exported) or ``torch``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from humwatch.errors import ConfigError, one_line

RUNTIMES = ("auto", "torch", "onnx")
EXPORT_FILE = "export.json"
FORMAT = "humwatch-export"


def torch_installed() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def is_exported(directory: str | Path) -> bool:
    return (Path(directory) / EXPORT_FILE).is_file()


def choose_runtime(directory: str | Path, runtime: str = "auto") -> str:
    """``torch`` or ``onnx`` for the monitor folder ``directory`` (see the module docstring)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    exported = is_exported(directory)
    if runtime == "onnx" and not exported:
        raise ConfigError(
            f"{directory}: not an exported monitor (no {EXPORT_FILE}); write one with `humwatch export MONITOR --format onnx --out DIR`"
        )
    if runtime == "auto":
        runtime = "onnx" if exported and not torch_installed() else "torch"
    if runtime == "torch" and not torch_installed():
        raise ConfigError(
            f"{directory}: PyTorch is not installed here; export the monitor (`humwatch export`) and score the exported folder with ONNX Runtime"
        )
    return runtime


class OnnxMethod:
    """What a :class:`~humwatch.monitor.Monitor` scores with (a :class:`~humwatch.methods.base.Scorer`:
    ``audio``, ``score``, ``readings``, ``info``), running the exported network."""

    backend = "onnx"
    natural_threshold = None

    def __init__(self, directory: Path, doc: dict, method_doc: dict, audio):
        import onnxruntime as ort

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
        model = directory / doc["model"]
        try:
            self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... kinds
            raise ConfigError(f"{model}: not a usable ONNX model ({one_line(e, 200)})") from None
        self.input = self.session.get_inputs()[0].name
        self.detector = None
        if doc["output"] == "embedding":
            from humwatch.methods.embedding import load_detector

            state = method_doc["state"]
            where = doc.get("detector_state")  # the key of the detector's state in the method's (idnet: "scorer")
            self.detector = load_detector(directory / "method", state.get(where) or {} if where else state)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0])

    def readings(self, clips, runtime=None) -> dict[str, np.ndarray]:
        from humwatch.methods.base import scores_at
        from humwatch.runtime import Runtime, current

        clips = list(clips)
        reader = (runtime or current() or Runtime()).reader(self.audio)
        kept, outs = [], []
        for k, xs in reader.batches(clips, self.doc["batch_size"], "scoring (onnx)", self.frontend):
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
        return {**self.method_info, "runtime": "onnx", "precision": self.doc["precision"]}

    @property
    def label(self) -> str:
        return f"{self.name} (onnx {self.doc['precision']})"


def load_onnx_method(directory: str | Path, audio) -> OnnxMethod:
    """The exported network of the monitor folder ``directory`` (whose manifest the caller checked),
    reading clips with ``audio`` (the monitor's :class:`~humwatch.audio.AudioSettings`)."""
    from humwatch.io import read_json_doc
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
    model = (d / doc["model"]).resolve()
    if d.resolve() not in model.parents or not model.is_file():
        raise ConfigError(f"{d / EXPORT_FILE}: model {doc['model']!r} is not a file inside the monitor")
    from humwatch.io import file_sha256

    if file_sha256(model) != doc["model_sha256"]:
        raise ConfigError(f"{model}: the network differs from the SHA-256 {EXPORT_FILE} records (changed after export)")
    method_doc = read_method_json(d / "method")
    if check_method_doc(d / "method", method_doc) != audio:
        raise ConfigError(f"{d / 'method'}: the method was fitted on other audio settings than the monitor's")
    return OnnxMethod(d, doc, method_doc, audio)
