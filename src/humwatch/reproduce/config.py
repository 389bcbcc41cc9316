"""The study's settings (``configs/study.yaml``) and its published Table III."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from humwatch.errors import ConfigError
from humwatch.finetune import HeadTraining

# ----------------------------------------------------------------------------------- constants

ROWS = ("autoencoder", "cnn-supervised", "ast-supervised", "cnn-lof", "ast-lof")
COLUMNS = ("fan_00", "fan_all", "pump_all", "valve_all", "slider_all")

PUBLISHED: dict[str, dict[str, float]] = {
    "autoencoder": {"fan_00": 0.7770, "fan_all": 0.9081, "pump_all": 0.8720, "valve_all": 0.5757, "slider_all": 0.8684},
    "cnn-supervised": {"fan_00": 0.9990, "fan_all": 0.9721, "pump_all": 0.9874, "valve_all": 0.9884, "slider_all": 0.9990},
    "ast-supervised": {"fan_00": 0.9990, "fan_all": 0.9779, "pump_all": 0.9904, "valve_all": 0.9999, "slider_all": 1.0000},
    "cnn-lof": {"fan_00": 0.7478, "fan_all": 0.8055, "pump_all": 0.8201, "valve_all": 0.7761, "slider_all": 0.8144},
    "ast-lof": {"fan_00": 0.7716, "fan_all": 0.7696, "pump_all": 0.8502, "valve_all": 0.8099, "slider_all": 0.8367},
}
"""The study's Table III (AUC on the test clips)."""

ROW_METHODS = ("autoencoder", "finetune", "lof")
SYNTHETIC_NOTE = "synthetic data, random-init tiny backbones: not comparable with the published numbers"

WEIGHTS_DIR_NAMES: dict[str, tuple[str, ...]] = {
    "ast": ("ast",),
    "resnext101_32x8d": (
        "resnext101_32x8d",
        "resnext101_32x8d.safetensors",
        "resnext101_32x8d.pth",
        "resnext101_32x8d.pt",
        "resnext101_32x8d.bin",
    ),
}
"""Names looked for inside ``--weights-dir``, per backbone, in this order. Other backbones:
``<name>`` then ``<name>.safetensors|.pth|.pt|.bin``."""

CONFIG_KEYS = ("seed", "split", "snr", "precision", "autoencoder", "finetune", "lof", "embed_batch_size",
               "backbones", "rows", "columns")


# --------------------------------------------------------------------------- the study's config


@dataclass
class StudyConfig:
    """The settings of Table III (``configs/study.yaml``)."""

    seed: int = 0
    test_fraction: float = 0.25
    val_fraction: float = 0.1
    snr: str | None = None
    precision: str = "auto"
    autoencoder: dict = field(default_factory=lambda: {"epochs": 50, "lr": 1e-3, "batch_size": 512})
    finetune: HeadTraining = field(default_factory=HeadTraining)
    lof: dict = field(default_factory=lambda: {"n_neighbors": 4, "contaminations": [0.1, 0.2, 0.3, 0.4]})
    embed_batch_size: int = 8
    backbones: dict = field(default_factory=dict)  # key -> {"name", "weights", "config"}
    rows: dict = field(default_factory=dict)  # row -> {"method", "backbone"}
    columns: dict = field(default_factory=dict)  # column -> {"machine", "ids"}
    source: str = ""

    def to_dict(self) -> dict:
        """The YAML form (what ``OUT/study.yaml`` holds)."""
        return {
            "seed": self.seed,
            "split": {"test": self.test_fraction, "val": self.val_fraction},
            "snr": self.snr,
            "precision": self.precision,
            "autoencoder": dict(self.autoencoder),
            "finetune": self.finetune.to_dict(),
            "lof": {"n_neighbors": self.lof["n_neighbors"], "contaminations": list(self.lof["contaminations"])},
            "embed_batch_size": self.embed_batch_size,
            "backbones": copy.deepcopy(self.backbones),
            "rows": copy.deepcopy(self.rows),
            "columns": copy.deepcopy(self.columns),
        }


def default_config_path() -> Path:
    """The packaged ``study.yaml`` (the same file as ``configs/study.yaml`` in the repository)."""
    from importlib import resources

    return Path(str(resources.files("humwatch") / "configs" / "study.yaml"))


def load_study_config(path: str | Path | None = None) -> StudyConfig:
    """Read and check a study config (default: the packaged ``study.yaml``)."""
    import yaml

    p = Path(path) if path is not None else default_config_path()
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not readable ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where} not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})") from None
    return parse_study_config(data, str(p))


def parse_study_config(data: Any, where: str = "study config") -> StudyConfig:
    """Check a parsed YAML mapping; every problem is one ConfigError line naming ``where`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of settings, got {type(data).__name__}")
    _keys(data, CONFIG_KEYS, where, required=("rows", "columns", "backbones"))
    c = StudyConfig(source=where)
    c.seed = _int(data.get("seed", 0), f"{where}: seed", 0)

    split = data.get("split", {}) or {}
    _mapping(split, f"{where}: split")
    _keys(split, ("test", "val"), f"{where}: split")
    c.test_fraction = _fraction(split.get("test", 0.25), f"{where}: split.test")
    c.val_fraction = _fraction(split.get("val", 0.1), f"{where}: split.val")

    snr = data.get("snr")
    if isinstance(snr, bool) or (snr is not None and not isinstance(snr, (str, int))):
        raise ConfigError(f"{where}: snr must be a noise level like 6dB, 0dB, -6dB (or null), got {snr!r}")
    c.snr = None if snr is None else str(snr)
    if c.snr is not None and c.snr.lower() != "all":
        from humwatch.data.common import normalize_snr

        try:
            normalize_snr(c.snr)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    c.precision = data.get("precision", "auto")
    if c.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"{where}: precision must be auto, fp32 or bf16, got {c.precision!r}")

    ae = data.get("autoencoder", {}) or {}
    _mapping(ae, f"{where}: autoencoder")
    _keys(ae, ("epochs", "lr", "batch_size"), f"{where}: autoencoder")
    c.autoencoder = {
        "epochs": _int(ae.get("epochs", 50), f"{where}: autoencoder.epochs", 1),
        "lr": _positive(ae.get("lr", 1e-3), f"{where}: autoencoder.lr"),
        "batch_size": _int(ae.get("batch_size", 512), f"{where}: autoencoder.batch_size", 1),
    }

    ft = data.get("finetune", {}) or {}
    _mapping(ft, f"{where}: finetune")
    for k in ("seed", "precision"):
        if k in ft:
            raise ConfigError(f"{where}: finetune.{k} is not set here (use the top-level {k})")
    c.finetune = HeadTraining.from_dict(ft, where=f"{where}: finetune")

    lof = data.get("lof", {}) or {}
    _mapping(lof, f"{where}: lof")
    _keys(lof, ("n_neighbors", "contaminations"), f"{where}: lof")
    cont = lof.get("contaminations", [0.1, 0.2, 0.3, 0.4])
    if not isinstance(cont, list) or not cont:
        raise ConfigError(f"{where}: lof.contaminations must be a non-empty list of numbers in (0, 0.5], got {cont!r}")
    for v in cont:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 0.5:
            raise ConfigError(f"{where}: lof.contaminations must hold numbers in (0, 0.5], got {v!r}")
    c.lof = {"n_neighbors": _int(lof.get("n_neighbors", 4), f"{where}: lof.n_neighbors", 1),
             "contaminations": [float(v) for v in cont]}
    c.embed_batch_size = _int(data.get("embed_batch_size", 8), f"{where}: embed_batch_size", 1)

    bbs = data["backbones"]
    _mapping(bbs, f"{where}: backbones", nonempty=True)
    for key, spec in bbs.items():
        w = f"{where}: backbones.{key}"
        _mapping(spec, w)
        _keys(spec, ("name", "weights", "config"), w, required=("name",))
        if not isinstance(spec["name"], str) or not spec["name"]:
            raise ConfigError(f"{w}.name must be a backbone name, got {spec['name']!r}")
        weights = spec.get("weights", "default")
        if not isinstance(weights, str) or not weights:
            raise ConfigError(f"{w}.weights must be 'default', 'none', a hub id or a path, got {weights!r}")
        conf = spec.get("config")
        if conf is not None and not isinstance(conf, dict):
            raise ConfigError(f"{w}.config must be a mapping of architecture settings, got {conf!r}")
        c.backbones[str(key)] = {"name": spec["name"], "weights": weights, "config": conf}

    rows = data["rows"]
    _mapping(rows, f"{where}: rows", nonempty=True)
    for name, spec in rows.items():
        w = f"{where}: rows.{name}"
        _mapping(spec, w)
        _keys(spec, ("method", "backbone"), w, required=("method",))
        method = spec["method"]
        if method not in ROW_METHODS:
            raise ConfigError(f"{w}.method must be one of {', '.join(ROW_METHODS)}, got {method!r}")
        bb = spec.get("backbone")
        if method == "autoencoder":
            if bb is not None:
                raise ConfigError(f"{w}: the autoencoder takes no backbone")
        elif bb not in c.backbones:
            raise ConfigError(f"{w}.backbone must be one of {', '.join(c.backbones)}, got {bb!r}")
        c.rows[str(name)] = {"method": method, "backbone": bb}

    cols = data["columns"]
    _mapping(cols, f"{where}: columns", nonempty=True)
    for name, spec in cols.items():
        w = f"{where}: columns.{name}"
        _mapping(spec, w)
        _keys(spec, ("machine", "ids"), w, required=("machine",))
        if not isinstance(spec["machine"], str) or not spec["machine"]:
            raise ConfigError(f"{w}.machine must be a machine type like fan, got {spec['machine']!r}")
        ids = spec.get("ids")
        if ids is not None:
            if not isinstance(ids, list) or not ids or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
                raise ConfigError(f"{w}.ids must be a non-empty list of machine ids like [\"00\"], got {ids!r}")
            ids = [_id_text(i) for i in ids]
        c.columns[str(name)] = {"machine": spec["machine"], "ids": ids}
    return c


def _id_text(i: str | int) -> str:
    return f"{i:02d}" if isinstance(i, int) else str(i)


def _keys(d: dict, known: Sequence[str], where: str, required: Sequence[str] = ()) -> None:
    unknown = [str(k) for k in d if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    missing = [k for k in required if k not in d]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")


def _mapping(v: Any, where: str, nonempty: bool = False) -> None:
    if not isinstance(v, dict) or (nonempty and not v):
        raise ConfigError(f"{where} must be a {'non-empty ' if nonempty else ''}mapping, got {v!r}")


def _int(v: Any, where: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{where} must be a whole number {low} or more, got {v!r}")
    return v


def _positive(v: Any, where: str) -> float:
    if isinstance(v, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{where} must be a positive number, got {v!r}")
    return float(v)


def _fraction(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ConfigError(f"{where} must be a number from 0 to below 1, got {v!r}")
    return float(v)

