"""The old dialect of ``study.yaml`` (before its rows were method specs), read and converted.

It had top-level ``autoencoder``, ``finetune``, ``lof``, ``embed_batch_size`` and ``backbones``
sections, and rows naming a kind (``autoencoder``, ``finetune`` or ``lof``) and a backbone key::

    backbones: {cnn: {name: resnext101_32x8d, weights: default}}
    rows: {cnn-lof: {method: lof, backbone: cnn}}

A file in that dialect (one with a ``backbones`` section) is checked as it always was and converted
into the method-spec dialect, giving the same cells (the same settings, so the same numbers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from humwatch.errors import ConfigError
from humwatch.finetune import HeadTraining
from humwatch.reproduce.checks import check_keys, check_mapping, positive, whole_number

OLD_KEYS = ("seed", "split", "snr", "precision", "autoencoder", "finetune", "lof", "embed_batch_size", "backbones", "rows", "columns")
ROW_METHODS = ("autoencoder", "finetune", "lof")


def is_old_dialect(data: Any) -> bool:
    """Whether a parsed study config is in the old dialect (it has a ``backbones`` section, or one
    of the old per-kind sections)."""
    return isinstance(data, dict) and any(k in data for k in ("backbones", "autoencoder", "finetune", "lof", "embed_batch_size"))


@dataclass
class _Old:
    autoencoder: dict = field(default_factory=dict)
    finetune: Any = None
    lof: dict = field(default_factory=dict)
    embed_batch_size: int = 8
    backbones: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)


def _as_specs(c: _Old, data: dict) -> dict:
    """The method-spec dialect of a checked old config: each row one spec (the settings the old
    reader gave its cells, less the precision, which stays top-level)."""
    rows = {}
    for name, row in c.rows.items():
        if row["method"] == "autoencoder":
            rows[name] = {"method": "autoencoder", "settings": dict(c.autoencoder)}
            continue
        bb = c.backbones[row["backbone"]]
        backbone = {"backbone": bb["name"], "weights": bb["weights"]}
        if bb["config"] is not None:
            backbone["backbone_config"] = copy.deepcopy(bb["config"])
        if row["method"] == "finetune":
            rows[name] = {"method": "finetune", "settings": {**backbone, **c.finetune.to_dict()}}
        else:
            rows[name] = {
                "method": "embed-detect",
                "settings": {
                    **backbone,
                    "detector": "lof-vote",
                    "batch_size": c.embed_batch_size,
                    "detector_params": {"n_neighbors": c.lof["n_neighbors"], "contaminations": list(c.lof["contaminations"])},
                },
            }
    shared = {k: copy.deepcopy(data[k]) for k in ("seed", "split", "snr", "precision", "columns") if k in data}
    return {**shared, "rows": rows}  # the shared keys are checked by the new dialect's reader


def convert_old_study(data: dict, where: str) -> dict:
    """An old-dialect study config, checked as before (every problem one ConfigError line naming
    ``where`` and the key), as the method-spec dialect (:func:`humwatch.reproduce.config.parse_study_config`)."""
    check_keys(data, OLD_KEYS, where, required=("rows", "columns", "backbones"))
    c = _Old()
    ae = data.get("autoencoder", {}) or {}
    check_mapping(ae, f"{where}: autoencoder")
    check_keys(ae, ("epochs", "lr", "batch_size"), f"{where}: autoencoder")
    c.autoencoder = {
        "epochs": whole_number(ae.get("epochs", 50), f"{where}: autoencoder.epochs", 1),
        "lr": positive(ae.get("lr", 1e-3), f"{where}: autoencoder.lr"),
        "batch_size": whole_number(ae.get("batch_size", 512), f"{where}: autoencoder.batch_size", 1),
    }

    ft = data.get("finetune", {}) or {}
    check_mapping(ft, f"{where}: finetune")
    for k in ("seed", "precision"):
        if k in ft:
            raise ConfigError(f"{where}: finetune.{k} is not set here (use the top-level {k})")
    c.finetune = HeadTraining.from_dict(ft, where=f"{where}: finetune")

    lof = data.get("lof", {}) or {}
    check_mapping(lof, f"{where}: lof")
    check_keys(lof, ("n_neighbors", "contaminations"), f"{where}: lof")
    cont = lof.get("contaminations", [0.1, 0.2, 0.3, 0.4])
    if not isinstance(cont, list) or not cont:
        raise ConfigError(f"{where}: lof.contaminations must be a non-empty list of numbers in (0, 0.5], got {cont!r}")
    for v in cont:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 0.5:
            raise ConfigError(f"{where}: lof.contaminations must hold numbers in (0, 0.5], got {v!r}")
    c.lof = {
        "n_neighbors": whole_number(lof.get("n_neighbors", 4), f"{where}: lof.n_neighbors", 1),
        "contaminations": [float(v) for v in cont],
    }
    c.embed_batch_size = whole_number(data.get("embed_batch_size", 8), f"{where}: embed_batch_size", 1)

    bbs = data["backbones"]
    check_mapping(bbs, f"{where}: backbones", nonempty=True)
    for key, spec in bbs.items():
        w = f"{where}: backbones.{key}"
        check_mapping(spec, w)
        check_keys(spec, ("name", "weights", "config"), w, required=("name",))
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
    check_mapping(rows, f"{where}: rows", nonempty=True)
    for name, spec in rows.items():
        w = f"{where}: rows.{name}"
        check_mapping(spec, w)
        check_keys(spec, ("method", "backbone"), w, required=("method",))
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

    return _as_specs(c, data)
