"""The study's settings (``configs/study.yaml``) and its published Table III."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from humwatch.errors import ConfigError
from humwatch.methods.spec import MethodSpec, spec_from_entry
from humwatch.reproduce.checks import check_keys, check_mapping, fraction, id_text, whole_number

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

PRECISIONS = ("auto", "fp32", "bf16")
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

CONFIG_KEYS = ("seed", "split", "snr", "precision", "rows", "columns")


# --------------------------------------------------------------------------- the study's config


@dataclass
class StudyConfig:
    """The settings of Table III (``configs/study.yaml``): the split, and each row a method spec
    (:class:`humwatch.methods.spec.MethodSpec`, named by the row) run once per column."""

    seed: int = 0
    test_fraction: float = 0.25
    val_fraction: float = 0.1
    snr: str | None = None
    precision: str = "auto"
    """Given to every row whose method has a ``precision`` setting and does not set it itself."""
    rows: dict[str, MethodSpec] = field(default_factory=dict)  # row -> its method spec (settings as written)
    columns: dict = field(default_factory=dict)  # column -> {"machine", "ids"}
    source: str = ""
    converted: bool = False
    """Read from the old dialect (:mod:`humwatch.reproduce.legacy`)."""

    def to_dict(self) -> dict:
        """The YAML form (what ``OUT/study.yaml`` holds): rows as spec objects ``{method, settings}``."""
        return {
            "seed": self.seed,
            "split": {"test": self.test_fraction, "val": self.val_fraction},
            "snr": self.snr,
            "precision": self.precision,
            "rows": {name: {"method": sp.method, "settings": copy.deepcopy(sp.settings)} for name, sp in self.rows.items()},
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
    """Check a parsed YAML mapping; every problem is one ConfigError line naming ``where`` and the
    key. A config in the old dialect (:mod:`humwatch.reproduce.legacy`) is checked and converted."""
    from humwatch.methods import method_settings
    from humwatch.reproduce.legacy import convert_old_study, is_old_dialect

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of settings, got {type(data).__name__}")
    c = StudyConfig(source=where)
    if is_old_dialect(data):
        data, c.converted = convert_old_study(data, where), True
    check_keys(data, CONFIG_KEYS, where, required=("rows", "columns"))
    c.seed = whole_number(data.get("seed", 0), f"{where}: seed", 0)

    split = data.get("split", {}) or {}
    check_mapping(split, f"{where}: split")
    check_keys(split, ("test", "val"), f"{where}: split")
    c.test_fraction = fraction(split.get("test", 0.25), f"{where}: split.test")
    c.val_fraction = fraction(split.get("val", 0.1), f"{where}: split.val")

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
    if c.precision not in PRECISIONS:
        raise ConfigError(f"{where}: precision must be auto, fp32 or bf16, got {c.precision!r}")

    rows = data["rows"]
    check_mapping(rows, f"{where}: rows", nonempty=True)
    for name, entry in rows.items():
        w = f"{where}: rows.{name}"
        try:
            sp = spec_from_entry(entry, str(name), where=w)
            sp.name = str(name)  # the row names the spec (a LABEL= in a spec string does not)
            MethodSpec(sp.method, sp.settings, sp.name)  # the name's characters checked
            method_settings(sp.method, sp.settings)  # every setting checked before any cell runs
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(w) else f"{w}: {msg}") from None
        c.rows[sp.name] = MethodSpec(sp.method, dict(sp.settings), sp.name)

    cols = data["columns"]
    check_mapping(cols, f"{where}: columns", nonempty=True)
    for name, spec in cols.items():
        w = f"{where}: columns.{name}"
        check_mapping(spec, w)
        check_keys(spec, ("machine", "ids"), w, required=("machine",))
        if not isinstance(spec["machine"], str) or not spec["machine"]:
            raise ConfigError(f"{w}.machine must be a machine type like fan, got {spec['machine']!r}")
        ids = spec.get("ids")
        if ids is not None:
            if not isinstance(ids, list) or not ids or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
                raise ConfigError(f'{w}.ids must be a non-empty list of machine ids like ["00"], got {ids!r}')
            ids = [id_text(i) for i in ids]
        c.columns[str(name)] = {"machine": spec["machine"], "ids": ids}
    return c
