"""`asdkit reproduce`: every cell of the study's Table III, resumable, against the published AUCs.

Rows (methods) x columns (data):

* ``autoencoder``: the MIMII baseline (:mod:`asdkit.models.autoencoder`), 50 epochs, lr 1e-3, batch 512;
* ``cnn-supervised`` / ``ast-supervised``: ResNeXt101_32x8d / AST fine-tuned with the study's head
  (:mod:`asdkit.finetune`: 1 epoch, lr 1e-3 for the head, the top 2 blocks at lr/10 and lr/100);
* ``cnn-lof`` / ``ast-lof``: pretrained embeddings into Local Outlier Factor (``lof-vote``:
  n_neighbors 4, four LOFs with contaminations 0.1, 0.2, 0.3, 0.4);

* ``fan_00``: fan id_00 alone (trained and tested on id_00 only); ``fan_all``, ``pump_all``,
  ``valve_all``, ``slider_all``: all ids of the machine type together (one model per type).

Every cell is one run directory ``OUT/runs/<row>__<column>/`` (config.json, split.csv, scores.csv,
results.json, results.md: everything to repeat it) and one result file
``OUT/cells/<row>__<column>.json`` written atomically when the cell finishes. Running again skips
every finished cell whose settings are unchanged (a *fingerprint* of the cell's settings is stored
with it), and retries failed ones. A cell that fails (any error) is reported as ``failed`` with its
one-line reason; the other cells still run. Embeddings come from the cache ``OUT/cache``.

The tables ``OUT/table3.md``, ``table3.csv`` and ``table3.json`` give, per cell, our AUC, the
published AUC and the difference (ours - published), the test clip counts, the weights used
(RANDOM INIT said loudly), the seed, the seconds the cell took, and the machine.

``--snr 6dB`` (or ``snr:`` in the config) picks one MIMII noise level when ``--data`` holds several.

``--weights-dir DIR`` takes local weights instead of the hub (for backbones whose configured
weights are ``default``): ``DIR/ast/`` (an AST
``save_pretrained`` folder) and ``DIR/resnext101_32x8d/`` (a folder) or
``DIR/resnext101_32x8d.{safetensors,pth,pt,bin}`` (a timm checkpoint file); in general
``DIR/<backbone name>`` as a folder or with a checkpoint suffix (see :data:`WEIGHTS_DIR_NAMES`).

``--synthetic`` runs the same table on built-in generated data (:func:`asdkit.data.synth.synthesize`
into ``OUT/data``, reused when its settings match) with random-initialised *tiny* backbones
(:data:`TINY_BACKBONES`) and fewer autoencoder epochs (:func:`reproduce_synthetic_defaults`); its
table says so: those numbers are not comparable with the published ones.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from asdkit.errors import AsdkitError, ConfigError
from asdkit.finetune import FinetuneSettings
from asdkit.io import read_json, write_csv, write_json, write_text
from asdkit.progress import console

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

TINY_BACKBONES: dict[str, dict] = {
    "ast": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64},
    "resnext101_32x8d": {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "cardinality": 2, "base_width": 32,
                         "stem_width": 8},
}
"""Architecture overrides of the random-initialised tiny backbones used by ``--synthetic``.
AST: 3 transformer layers of width 32 (2 heads, MLP 64) on the real 1024 x 128 input (32-d
embedding). ResNeXt: one bottleneck per stage, stage widths 8-16-32-64, cardinality 2, an 8-wide
stem, on the real 3 x 128 x 1251 input (256-d embedding). Both keep their backbone's block
structure (patch embedding + layers + final norm; stem + layer1-4), so the fine-tuning rules
(top 2 blocks trainable at lr/10 and lr/100, the rest frozen) apply unchanged."""

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
    precision: str = "fp32"
    autoencoder: dict = field(default_factory=lambda: {"epochs": 50, "lr": 1e-3, "batch_size": 512})
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
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
            "finetune": {k: v for k, v in asdict(self.finetune).items() if k not in ("seed", "precision")},
            "lof": {"n_neighbors": self.lof["n_neighbors"], "contaminations": list(self.lof["contaminations"])},
            "embed_batch_size": self.embed_batch_size,
            "backbones": copy.deepcopy(self.backbones),
            "rows": copy.deepcopy(self.rows),
            "columns": copy.deepcopy(self.columns),
        }


def default_config_path() -> Path:
    """The packaged ``study.yaml`` (the same file as ``configs/study.yaml`` in the repository)."""
    from importlib import resources

    return Path(str(resources.files("asdkit") / "configs" / "study.yaml"))


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

    c.precision = data.get("precision", "fp32")
    if c.precision not in ("fp32", "bf16"):
        raise ConfigError(f"{where}: precision must be fp32 or bf16, got {c.precision!r}")

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
    c.finetune = FinetuneSettings.from_dict({**ft, "seed": c.seed, "precision": c.precision}, where=f"{where}: finetune")

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


# ------------------------------------------------------------------------------------ synthetic


@dataclass
class SyntheticSettings:
    """What ``--synthetic`` generates and trains (see :func:`reproduce_synthetic_defaults`)."""

    machines: tuple[str, ...] = ("fan", "pump", "valve", "slider")
    ids: tuple[str, ...] = ("00", "02", "04", "06")
    n_normal: int = 30
    n_anomalous: int = 10
    snr_db: float = 6.0
    seed: int = 0
    autoencoder_epochs: int = 20
    finetune_epochs: int = 1
    backbone_configs: dict = field(default_factory=lambda: copy.deepcopy(TINY_BACKBONES))

    def validate(self) -> "SyntheticSettings":
        for name in ("n_normal", "n_anomalous", "autoencoder_epochs", "finetune_epochs"):
            _int(getattr(self, name), f"synthetic: {name}", 1)
        _int(self.seed, "synthetic: seed", 0)
        if not self.machines or not self.ids:
            raise ConfigError("synthetic: machines and ids must not be empty")
        return self


def reproduce_synthetic_defaults(**overrides: Any) -> SyntheticSettings:
    """The ``--synthetic`` defaults: 4 machine types x 4 ids x (30 normal + 10 anomalous) clips
    of 10 s at 6 dB, tiny random-init backbones (:data:`TINY_BACKBONES`), 20 autoencoder epochs,
    1 fine-tuning epoch. ``asdkit demo`` passes a smaller size, e.g.
    ``reproduce_synthetic_defaults(n_normal=12, n_anomalous=4)``."""
    s = SyntheticSettings()
    unknown = sorted(set(overrides) - set(asdict(s)))
    if unknown:
        raise ConfigError(f"synthetic: unknown setting(s) {', '.join(unknown)}")
    return replace(s, **overrides).validate()


def synthetic_data(out: Path, s: SyntheticSettings, progress: bool = True) -> Path:
    """Generate (or reuse, when ``data/synth-params.json`` matches) the synthetic dataset under ``out/data``."""
    from asdkit.data.synth import synthesize

    data = Path(out) / "data"
    params = {"machines": list(s.machines), "ids": list(s.ids), "n_normal": s.n_normal,
              "n_anomalous": s.n_anomalous, "snr_db": s.snr_db, "seed": s.seed}
    stamp = data / "synth-params.json"
    if stamp.is_file():
        try:
            if read_json(stamp) == params:
                console.print(f"reusing the generated data in {data}")
                return data
        except (OSError, ValueError):
            pass
        raise ConfigError(f"{data}: holds generated data with other settings; remove it or use another --out")
    if data.exists():  # an interrupted generation is redone; anything else there is not ours to overwrite
        from asdkit.data.mimii import SNR_DIR_RE

        foreign = [p.name for p in data.iterdir()
                   if not (p.name == "manifest.csv" or p.name.startswith(".") or (p.is_dir() and SNR_DIR_RE.match(p.name)))]
        if foreign:
            raise ConfigError(f"{data}: holds files not written by --synthetic ({foreign[0]}); use another --out")
    n = len(s.machines) * len(s.ids) * (s.n_normal + s.n_anomalous)
    console.print(f"generating {n} clips in {data}")
    synthesize(data, machines=list(s.machines), ids=list(s.ids), n_normal=s.n_normal, n_anomalous=s.n_anomalous,
               snr_db=s.snr_db, seed=s.seed, progress=progress)
    write_json(stamp, params)
    return data


def apply_synthetic(cfg: StudyConfig, s: SyntheticSettings) -> StudyConfig:
    """The study config with tiny random-init backbones and the synthetic epochs."""
    cfg = copy.deepcopy(cfg)
    for spec in cfg.backbones.values():
        spec["weights"] = "none"
        spec["config"] = copy.deepcopy(s.backbone_configs.get(spec["name"], spec.get("config")))
    cfg.autoencoder["epochs"] = s.autoencoder_epochs
    cfg.finetune = replace(cfg.finetune, epochs=s.finetune_epochs)
    cfg.columns = {k: v for k, v in cfg.columns.items() if v["machine"] in s.machines}
    return cfg


# ----------------------------------------------------------------------------------------- cells


@dataclass
class CellSpec:
    """Everything that decides one cell's numbers."""

    row: str
    column: str
    method: str  # autoencoder | finetune | lof
    machine: str
    ids: list[str] | None
    run_config: Any  # asdkit.pipeline.RunConfig
    finetune: FinetuneSettings | None = None
    error: str | None = None  # a reason known before running (e.g. no local weights)

    @property
    def key(self) -> str:
        return f"{self.row}__{self.column}"

    def fingerprint(self) -> str:
        """A hash of the settings behind the numbers (not the cache folder or batch size)."""
        rc = {k: v for k, v in asdict(self.run_config).items() if k not in ("cache_dir", "embed_batch_size")}
        payload = {"method": self.method, "run": rc, "finetune": asdict(self.finetune) if self.finetune else None,
                   "error": self.error}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_weights_dir(weights_dir: str | Path, backbone: str) -> str:
    """The local weights of ``backbone`` inside ``weights_dir`` (see :data:`WEIGHTS_DIR_NAMES`)."""
    d = Path(weights_dir)
    names = WEIGHTS_DIR_NAMES.get(backbone) or (backbone,) + tuple(f"{backbone}{s}" for s in (".safetensors", ".pth", ".pt", ".bin"))
    for n in names:
        if (d / n).exists():
            return str((d / n).resolve())
    raise ConfigError(f"--weights-dir {d}: no weights for {backbone} (looked for {', '.join(names)})")


def plan_cells(cfg: StudyConfig, data: str | Path, out: Path, *, rows: Sequence[str] | None = None,
               machines: Sequence[str] | None = None, weights_dir: str | Path | None = None) -> list[CellSpec]:
    """The cells to run, in table order (row by row)."""
    from asdkit.pipeline import RunConfig

    rows = list(rows) if rows else list(cfg.rows)
    bad = [r for r in rows if r not in cfg.rows]
    if bad:
        raise ConfigError(f"unknown row(s) {', '.join(bad)} (the config has {', '.join(cfg.rows)})")
    known_machines = sorted({c["machine"] for c in cfg.columns.values()})
    if machines:
        bad = [m for m in machines if m not in known_machines]
        if bad:
            raise ConfigError(f"unknown machine type(s) {', '.join(bad)} (the table has {', '.join(known_machines)})")
    columns = [k for k, c in cfg.columns.items() if not machines or c["machine"] in machines]
    data = Path(data)
    cells = []
    for row in rows:
        spec = cfg.rows[row]
        method = spec["method"]
        bb = cfg.backbones.get(spec["backbone"]) if spec["backbone"] else None
        for col in columns:
            colspec = cfg.columns[col]
            error = None
            weights = bb["weights"] if bb else "default"
            if bb and weights_dir is not None and weights == "default":
                try:
                    weights = resolve_weights_dir(weights_dir, bb["name"])
                except ConfigError as e:
                    error = str(e)
            rc = RunConfig(
                data=str(data), method={"lof": "embed-detect"}.get(method, method),
                machines=[colspec["machine"]], ids=list(colspec["ids"]) if colspec["ids"] else None, snr=cfg.snr,
                seed=cfg.seed, test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
                epochs=cfg.autoencoder["epochs"], lr=cfg.autoencoder["lr"], batch_size=cfg.autoencoder["batch_size"],
                backbone=bb["name"] if bb else "ast", weights=weights, precision=cfg.precision,
                backbone_config=copy.deepcopy(bb["config"]) if bb else None,
                detector="lof-vote",
                detector_params={"n_neighbors": cfg.lof["n_neighbors"], "contaminations": tuple(cfg.lof["contaminations"])}
                if method == "lof" else {},
                embed_batch_size=cfg.embed_batch_size, cache_dir=str(out / "cache"),
            )
            cells.append(CellSpec(row, col, method, colspec["machine"], colspec["ids"], rc,
                                  cfg.finetune if method == "finetune" else None, error))
    return cells


def run_cell(cell: CellSpec, run_dir: Path, progress: bool = True) -> dict:
    """Run one cell into ``run_dir``; returns its AUC, pAUC, counts and weights (raises on failure)."""
    if cell.error:
        raise ConfigError(cell.error)
    from asdkit.pipeline import run

    rc = cell.run_config
    if cell.method == "finetune":
        rc = dataclasses.replace(rc, finetune=dataclasses.asdict(cell.finetune))
    res = run(rc, run_dir, progress=progress)
    picked = [r for r in res.rows if r["machine_type"] == cell.machine and r["machine_id"] == "all"]
    if not picked:
        raise AsdkitError(f"{cell.key}: no results for machine type {cell.machine}")
    r = picked[0]
    return {
        "auc": _num(r["auc"]), "pauc": _num(r.get("pauc")),
        "n_normal": int(r["n_normal"]), "n_anomalous": int(r["n_anomalous"]),
        "weights": res.info.get("weights", ""), "random_init": bool(res.info.get("random_init", False)),
    }


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def published(row: str, column: str) -> float | None:
    return PUBLISHED.get(row, {}).get(column)


def cell_record(cell: CellSpec, status: str, result: dict | None, seconds: float, reason: str = "") -> dict:
    """One cell's entry of the table (what ``cells/<row>__<column>.json`` holds)."""
    result = result or {}
    ours = result.get("auc")
    pub = published(cell.row, cell.column)
    return {
        "row": cell.row,
        "column": cell.column,
        "status": status,
        "auc": ours,
        "published": pub,
        "difference": None if ours is None or pub is None else ours - pub,
        "pauc": result.get("pauc"),
        "n_normal": result.get("n_normal"),
        "n_anomalous": result.get("n_anomalous"),
        "weights": result.get("weights", ""),
        "random_init": bool(result.get("random_init", False)),
        "seed": cell.run_config.seed,
        "seconds": round(seconds, 2),
        "reason": reason,
        "method": cell.method,
        "backbone": cell.run_config.backbone if cell.method != "autoencoder" else None,
        "fingerprint": cell.fingerprint(),
        "run_dir": f"runs/{cell.key}",
    }


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return msg if isinstance(e, AsdkitError) else f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ------------------------------------------------------------------------------------ the table


@dataclass
class Table3:
    """The outcome of :func:`reproduce`: every selected cell and where the tables are."""

    cells: list[dict]
    out: Path
    meta: dict

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.cells if c["status"] != "ok"]

    def cell(self, row: str, column: str) -> dict:
        for c in self.cells:
            if c["row"] == row and c["column"] == column:
                return c
        raise KeyError(f"{row}/{column}")


def reproduce(
    data: str | Path | None,
    out: str | Path,
    config: str | Path | StudyConfig | None = None,
    *,
    machines: Sequence[str] | None = None,
    rows: Sequence[str] | None = None,
    weights_dir: str | Path | None = None,
    synthetic: bool | SyntheticSettings = False,
    precision: str | None = None,
    progress: bool = True,
    on_cell: Callable[[dict], None] | None = None,
    threads: int | None = None,
    snr: str | None = None,
    report: bool = True,
) -> Table3:
    """Run every cell of Table III (skipping finished ones) and write ``table3.{md,csv,json}`` in ``out``.

    ``synthetic``: True (or a :class:`SyntheticSettings`) generates data into ``out/data`` and uses
    tiny random-init backbones; ``data`` must then be None. ``snr`` (e.g. ``6dB``) overrides the
    config's MIMII noise level (needed when ``data`` holds several levels). ``on_cell`` is called with each cell's
    record as it finishes (or is reused). ``threads``: torch's CPU threads for this call (restored
    after; default: torch's own, or 1 with ``synthetic``); on a busy shared machine 1 thread is many
    times faster than torch's default, whose threads spin-wait for each other. The numbers agree
    to float rounding across thread counts. ``report``: also write the explanations and
    ``explain/report.html`` (:func:`asdkit.explain.explain_run`) once the table is done.
    """
    if threads is None and synthetic:
        threads = 1  # tiny models gain nothing from more threads, and lose a lot on a busy machine
    if threads is None:
        return _reproduce(data, out, config, machines, rows, weights_dir, synthetic, precision, progress, on_cell, snr, report)
    _int(threads, "--threads", 1)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _reproduce(data, out, config, machines, rows, weights_dir, synthetic, precision, progress, on_cell, snr, report)
    finally:
        torch.set_num_threads(before)


def _reproduce(data, out, config, machines, rows, weights_dir, synthetic, precision, progress, on_cell, snr,
               report=True) -> Table3:
    t0 = time.time()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    cfg = config if isinstance(config, StudyConfig) else load_study_config(config)
    if precision is not None:
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision must be fp32 or bf16, got {precision!r}")
        cfg = copy.deepcopy(cfg)
        cfg.precision = precision
        cfg.finetune = replace(cfg.finetune, precision=precision)
    if snr is not None:
        cfg = copy.deepcopy(cfg)
        cfg.snr = str(snr)
    synth: SyntheticSettings | None = None
    if synthetic:
        synth = synthetic if isinstance(synthetic, SyntheticSettings) else reproduce_synthetic_defaults()
        synth.validate()
        if data is not None:
            raise ConfigError("use --data or --synthetic, not both")
        if weights_dir is not None:
            raise ConfigError("--weights-dir does not apply to --synthetic (its backbones are random-init tiny ones)")
        cfg = apply_synthetic(cfg, synth)
    elif data is None:
        raise ConfigError("--data is required (the MIMII root), or use --synthetic")
    elif not Path(data).exists():
        raise ConfigError(f"--data {data}: no such file or folder")
    if weights_dir is not None and not Path(weights_dir).is_dir():
        raise ConfigError(f"--weights-dir {weights_dir}: no such folder")
    out.mkdir(parents=True, exist_ok=True)
    if synth is not None:
        data = synthetic_data(out, synth, progress=progress)
    cells = plan_cells(cfg, data, out, rows=rows, machines=machines, weights_dir=weights_dir)

    meta = _meta(cfg, data, synth, weights_dir)
    _write_config(out, cfg, meta)
    records: list[dict] = []
    for cell in cells:
        rec = _run_or_reuse(cell, out, progress)
        records.append(rec)
        if on_cell:
            on_cell(rec)
        write_tables(out, records, {**meta, "seconds": round(time.time() - t0, 2)})
    meta["seconds"] = round(time.time() - t0, 2)
    write_tables(out, records, meta)
    if report:
        write_report_for(out)
    return Table3(records, out, meta)


def write_report_for(out: Path) -> Path | None:
    """The explanations and report.html of a reproduce directory; a figure that cannot be drawn is
    noted in the report, and a report that cannot be written at all is said, not raised (the
    table is the result; the report explains it)."""
    from asdkit.explain import explain_run

    console.print("[bold]drawing the explanations (report.html)[/]")
    try:
        res = explain_run(out)
    except AsdkitError as e:
        console.print(f"[yellow]report not written: {e}[/]")
        return None
    console.print(f"report: {res.report}")
    return res.report


def _run_or_reuse(cell: CellSpec, out: Path, progress: bool) -> dict:
    path = out / "cells" / f"{cell.key}.json"
    fp = cell.fingerprint()
    if path.is_file():
        try:
            old = read_json(path)
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("status") == "ok" and old.get("fingerprint") == fp:
            old["reused"] = True
            return old
    console.print(f"[bold]Table III cell {cell.row} / {cell.column}[/]")
    t = time.time()
    try:
        result = run_cell(cell, out / "runs" / cell.key, progress)
        rec = cell_record(cell, "ok", result, time.time() - t)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a failed cell is reported and the others still run
        reason = _one_line(e)
        if cell.method != "autoencoder" and "--weights " in reason:
            reason += f"; here: --weights-dir DIR holding {cell.run_config.backbone} (see asdkit.reproduce.WEIGHTS_DIR_NAMES)"
        rec = cell_record(cell, "failed", None, time.time() - t, reason)
        console.print(f"[red]{cell.key} failed: {rec['reason']}[/]")
    write_json(path, rec)
    rec["reused"] = False
    return rec


def _meta(cfg: StudyConfig, data: Any, synth: SyntheticSettings | None, weights_dir: Any) -> dict:
    from asdkit.runinfo import environment

    return {
        "title": "Table III: AUC per method and machine (ours vs published)",
        "synthetic": synth is not None,
        "note": SYNTHETIC_NOTE if synth is not None else "",
        "data": str(data),
        "config_source": cfg.source or "packaged study.yaml",
        "weights_dir": str(weights_dir) if weights_dir is not None else None,
        "seed": cfg.seed,
        "precision": cfg.precision,
        "synthetic_settings": asdict(synth) if synth is not None else None,
        "torch_threads": _torch_threads(),
        **environment(),
    }


def _torch_threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover
        return None


def _write_config(out: Path, cfg: StudyConfig, meta: dict) -> None:
    """``OUT/study.yaml`` (the settings used, after --synthetic / --precision) and ``OUT/config.json``."""
    import yaml

    write_text(out / "study.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_json(out / "config.json", {"study": cfg.to_dict(), **meta})


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def render_markdown(records: Sequence[dict], meta: dict) -> str:
    """The table as Markdown: a grid of ours / published (difference) and a line per cell."""
    rows = list(dict.fromkeys(r["row"] for r in records))
    cols = list(dict.fromkeys(r["column"] for r in records))
    by = {(r["row"], r["column"]): r for r in records}
    lines = [f"# {meta.get('title', 'Table III')}", ""]
    if meta.get("synthetic"):
        lines += [f"**{SYNTHETIC_NOTE}.**", ""]
    rand = sorted({r["row"] for r in records if r.get("random_init")})
    if rand and not meta.get("synthetic"):
        lines += [f"**RANDOM INIT: {', '.join(rand)} used backbones without pretrained weights; "
                  "their numbers say nothing about the pretrained models.**", ""]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += [f"**{len(failed)} cell(s) failed** (run again to retry them; finished cells are kept).", ""]
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    lines += [
        f"- data: {meta.get('data')}",
        f"- config: {meta.get('config_source')}; seed {meta.get('seed')}; precision {meta.get('precision')}",
        f"- machine: {machine.get('cpu')} ({machine.get('cores')} cores, torch threads {meta.get('torch_threads')}), "
        f"{machine.get('platform')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"- total seconds: {meta.get('seconds', 'n/a')}",
        "",
        "Each cell: our AUC / published AUC (difference = ours - published).",
        "",
        "| row | " + " | ".join(cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    for row in rows:
        cells = []
        for col in cols:
            r = by.get((row, col))
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(f"failed / {_fmt(r['published'])}")
            else:
                cells.append(f"{_fmt(r['auc'])} / {_fmt(r['published'])} ({_fmt(r['difference'], True)})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "## Cells", "",
              "| row | column | status | AUC | published | difference | test normal | test anomalous | weights | seed | seconds | reason |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        weights = r.get("weights") or ""
        lines.append(
            f"| {r['row']} | {r['column']} | {r['status']} | {_fmt(r['auc'])} | {_fmt(r['published'])} | "
            f"{_fmt(r['difference'], True)} | {r.get('n_normal') if r.get('n_normal') is not None else ''} | "
            f"{r.get('n_anomalous') if r.get('n_anomalous') is not None else ''} | {_md(weights)} | {r['seed']} | "
            f"{r['seconds']} | {_md(r.get('reason') or '')} |"
        )
    return "\n".join(lines) + "\n"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


CSV_COLUMNS = ("row", "column", "status", "auc", "published", "difference", "pauc", "n_normal", "n_anomalous",
               "weights", "random_init", "seed", "seconds", "reason")


def write_tables(out: Path, records: Sequence[dict], meta: dict) -> None:
    """``table3.md``, ``table3.csv`` and ``table3.json`` (each written atomically)."""
    out = Path(out)

    def cell(v: Any) -> Any:
        if isinstance(v, float):
            return f"{v:.6f}"
        return "" if v is None else v

    write_csv(out / "table3.csv", CSV_COLUMNS, ([cell(r.get(k)) for k in CSV_COLUMNS] for r in records))
    clean = [{k: v for k, v in r.items() if k != "reused"} for r in records]
    write_json(out / "table3.json", {**meta, "published": PUBLISHED, "cells": clean})
    write_text(out / "table3.md", render_markdown(records, meta))
