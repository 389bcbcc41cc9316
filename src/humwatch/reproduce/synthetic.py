"""``--synthetic``: Table III on the built-in generated data, with random-init tiny backbones."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from humwatch.errors import ConfigError
from humwatch.io import read_json, write_json
from humwatch.methods.spec import MethodSpec
from humwatch.models import TINY_CONFIGS
from humwatch.progress import console
from humwatch.reproduce.checks import whole_number
from humwatch.reproduce.config import StudyConfig

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
    backbone_configs: dict = field(default_factory=lambda: copy.deepcopy(TINY_CONFIGS))

    def validate(self) -> "SyntheticSettings":
        for name in ("n_normal", "n_anomalous", "autoencoder_epochs", "finetune_epochs"):
            whole_number(getattr(self, name), f"synthetic: {name}", 1)
        whole_number(self.seed, "synthetic: seed", 0)
        if not self.machines or not self.ids:
            raise ConfigError("synthetic: machines and ids must not be empty")
        return self


def reproduce_synthetic_defaults(**overrides: Any) -> SyntheticSettings:
    """The ``--synthetic`` defaults: 4 machine types x 4 ids x (30 normal + 10 anomalous) clips
    of 10 s at 6 dB, tiny random-init backbones (:data:`humwatch.models.TINY_CONFIGS`), 20 autoencoder epochs,
    1 fine-tuning epoch. ``humwatch demo`` passes a smaller size, e.g.
    ``reproduce_synthetic_defaults(n_normal=12, n_anomalous=4)``."""
    s = SyntheticSettings()
    unknown = sorted(set(overrides) - set(asdict(s)))
    if unknown:
        raise ConfigError(f"synthetic: unknown setting(s) {', '.join(unknown)}")
    return replace(s, **overrides).validate()


def synthetic_data(out: Path, s: SyntheticSettings, progress: bool = True) -> Path:
    """Generate (or reuse, when ``data/synth-params.json`` matches) the synthetic dataset under ``out/data``."""
    from humwatch.data.synth import synthesize

    data = Path(out) / "data"
    params = {
        "machines": list(s.machines),
        "ids": list(s.ids),
        "n_normal": s.n_normal,
        "n_anomalous": s.n_anomalous,
        "snr_db": s.snr_db,
        "seed": s.seed,
    }
    stamp = data / "synth-params.json"
    if stamp.is_file():
        if read_json(stamp) == params:  # a damaged stamp is a DamagedFileError, not "other settings"
            console.print(f"reusing the generated data in {data}")
            return data
        raise ConfigError(f"{data}: holds generated data with other settings; remove it or use another --out")
    if data.exists():  # an interrupted generation is redone; anything else there is not ours to overwrite
        from humwatch.data.mimii import SNR_DIR_RE

        foreign = [
            p.name
            for p in data.iterdir()
            if not (p.name == "manifest.csv" or p.name.startswith(".") or (p.is_dir() and SNR_DIR_RE.match(p.name)))
        ]
        if foreign:
            raise ConfigError(f"{data}: holds files not written by --synthetic ({foreign[0]}); use another --out")
    n = len(s.machines) * len(s.ids) * (s.n_normal + s.n_anomalous)
    console.print(f"generating {n} clips in {data}")
    synthesize(
        data,
        machines=list(s.machines),
        ids=list(s.ids),
        n_normal=s.n_normal,
        n_anomalous=s.n_anomalous,
        snr_db=s.snr_db,
        seed=s.seed,
        progress=progress,
    )
    write_json(stamp, params)
    return data


def apply_synthetic(cfg: StudyConfig, s: SyntheticSettings) -> StudyConfig:
    """The study config with tiny random-init backbones (every row naming a ``backbone``) and the
    synthetic epochs (the autoencoder's and fine-tuning's), on the synthetic machine types."""
    cfg = copy.deepcopy(cfg)
    for name, sp in cfg.rows.items():
        settings = dict(sp.settings)
        if isinstance(settings.get("backbone"), str):
            settings["weights"] = "none"
            tiny = s.backbone_configs.get(settings["backbone"], settings.get("backbone_config"))
            settings["backbone_config"] = copy.deepcopy(tiny)
        if sp.method == "autoencoder":
            settings["epochs"] = s.autoencoder_epochs
        elif sp.method == "finetune":
            settings["epochs"] = s.finetune_epochs
        cfg.rows[name] = MethodSpec(sp.method, settings, name)
    cfg.columns = {k: v for k, v in cfg.columns.items() if v["machine"] in s.machines}
    return cfg
