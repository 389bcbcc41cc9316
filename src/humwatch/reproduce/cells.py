"""The cells of Table III: each row of the study config (a method spec) once per column, as the
method spec named ``<row>__<column>``; :func:`reproduce` runs them all through the one resumable
orchestrator (:func:`humwatch.orchestrator.run_jobs`, as ``humwatch compare`` does) and writes the tables."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from humwatch import orchestrator
from humwatch.errors import ConfigError, HumwatchError
from humwatch.io import write_json, write_text
from humwatch.methods.spec import MethodSpec
from humwatch.progress import console
from humwatch.reproduce.checks import whole_number
from humwatch.reproduce.config import PRECISIONS, PUBLISHED, SYNTHETIC_NOTE, WEIGHTS_DIR_NAMES, StudyConfig, load_study_config
from humwatch.reproduce.synthetic import SyntheticSettings, apply_synthetic, reproduce_synthetic_defaults, synthetic_data
from humwatch.reproduce.tables import Table3, write_tables

# ----------------------------------------------------------------------------------------- cells


@dataclass
class CellSpec(orchestrator.Job):
    """One cell: the row's method spec (named ``<row>__<column>``, its settings completed) and its
    run on the column's data; its fingerprint is :func:`humwatch.orchestrator.fingerprint`'s."""

    row: str = ""
    column: str = ""
    machine: str = ""
    ids: list[str] | None = None

    @property
    def key(self) -> str:
        return f"{self.row}__{self.column}"

    @property
    def method(self) -> str:
        """The row's kind, as Table III names it: ``autoencoder``, ``finetune``, ``lof`` (LOF on
        embeddings), or another method's name."""
        return row_kind(self.spec)


def row_kind(spec: MethodSpec) -> str:
    if spec.method == "embed-detect" and str(spec.settings.get("detector", "")).startswith("lof"):
        return "lof"
    return spec.method


def resolve_weights_dir(weights_dir: str | Path, backbone: str) -> str:
    """The local weights of ``backbone`` inside ``weights_dir`` (see :data:`WEIGHTS_DIR_NAMES`)."""
    d = Path(weights_dir)
    names = WEIGHTS_DIR_NAMES.get(backbone) or (backbone,) + tuple(f"{backbone}{s}" for s in (".safetensors", ".pth", ".pt", ".bin"))
    for n in names:
        if (d / n).exists():
            return str((d / n).resolve())
    raise ConfigError(f"--weights-dir {d}: no weights for {backbone} (looked for {', '.join(names)})")


def plan_cells(
    cfg: StudyConfig,
    data: str | Path,
    out: Path,
    *,
    rows: Sequence[str] | None = None,
    machines: Sequence[str] | None = None,
    weights_dir: str | Path | None = None,
    device: str = "cpu",
) -> list[CellSpec]:
    """The cells to run, in table order (row by row)."""
    from humwatch.methods import method_settings
    from humwatch.pipeline import RunConfig

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
        settings = copy.deepcopy(spec.settings)
        if "precision" in method_settings(spec.method, settings).to_dict():
            settings.setdefault("precision", cfg.precision)
        error = None
        if (
            weights_dir is not None
            and isinstance(settings.get("backbone"), str)
            and method_settings(spec.method, settings).to_dict().get("weights") == "default"
        ):
            try:
                settings["weights"] = resolve_weights_dir(weights_dir, settings["backbone"])
            except ConfigError as e:
                error = str(e)
        for col in columns:
            colspec = cfg.columns[col]
            rc = RunConfig(
                data=str(data),
                method=spec.method,
                settings=copy.deepcopy(settings),
                machines=[colspec["machine"]],
                ids=list(colspec["ids"]) if colspec["ids"] else None,
                snr=cfg.snr,
                seed=cfg.seed,
                test_fraction=cfg.test_fraction,
                val_fraction=cfg.val_fraction,
                dataset_split=False,
                cache_dir=str(out / "cache"),
                device=device,
            )
            rc.validate()  # every setting checked (and written out in full) before any cell runs
            cell_spec = MethodSpec(spec.method, rc.settings, f"{row}__{col}", given=spec.text())
            cells.append(CellSpec(cell_spec, rc, error=error, row=row, column=col, machine=colspec["machine"], ids=colspec["ids"]))
    return cells


def with_precision(cfg: StudyConfig, precision: str) -> StudyConfig:
    """``cfg`` with every row at ``precision`` (``--precision``: over a row's own too)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    cfg = copy.deepcopy(cfg)
    cfg.precision = precision
    for sp in cfg.rows.values():
        sp.settings.pop("precision", None)
    return cfg


def run_cell(cell: CellSpec, run_dir: Path, progress: bool = True) -> dict:
    """Run one cell into ``run_dir``; returns its AUC, pAUC, counts and weights (raises on failure)."""
    if cell.error:
        raise ConfigError(cell.error)
    res = orchestrator.execute(cell, run_dir, progress=progress)  # a failed or stale cell is redone
    picked = [r for r in res.rows if r["machine_type"] == cell.machine and r["machine_id"] == "all"]
    if not picked:
        raise HumwatchError(f"{cell.key}: no results for machine type {cell.machine}")
    r = picked[0]
    training = [g["training"] for g in res.info.get("groups", {}).values() if g.get("training")]
    return {
        "auc": _num(r["auc"]),
        "pauc": _num(r.get("pauc")),
        "auc_ci": [_num(v) for v in r.get("auc_ci", [None, None])],
        "auc_votes": _num(r.get("auc_votes")),
        "pauc_votes": _num(r.get("pauc_votes")),
        "n_normal": int(r["n_normal"]),
        "n_anomalous": int(r["n_anomalous"]),
        "weights": res.info.get("weights", ""),
        "random_init": bool(res.info.get("random_init", False)),
        "trainable_params": training[0].get("trainable_params") if training else None,
        "total_params": training[0].get("total_params") if training else None,
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
        "auc_ci": result.get("auc_ci"),
        "auc_votes": result.get("auc_votes"),
        "pauc_votes": result.get("pauc_votes"),
        "trainable_params": result.get("trainable_params"),
        "total_params": result.get("total_params"),
        "n_normal": result.get("n_normal"),
        "n_anomalous": result.get("n_anomalous"),
        "weights": result.get("weights", ""),
        "random_init": bool(result.get("random_init", False)),
        "seed": cell.run_config.seed,
        "seconds": round(seconds, 2),
        "reason": reason,
        "method": cell.method,
        "backbone": cell.run_config.settings.get("backbone"),
        "fingerprint": cell.fingerprint(),
        "run_dir": f"runs/{cell.key}",
    }


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
    device: str = "cpu",
) -> Table3:
    """Run every cell of Table III (skipping finished ones) and write ``table3.{md,csv,json}`` in ``out``.

    ``synthetic``: True (or a :class:`SyntheticSettings`) generates data into ``out/data`` and uses
    tiny random-init backbones; ``data`` must then be None. ``snr`` (e.g. ``6dB``) overrides the
    config's MIMII noise level (needed when ``data`` holds several levels). ``on_cell`` is called with each cell's
    record as it finishes (or is reused). ``threads``: torch's CPU threads for this call (restored
    after; default: torch's own, or 1 with ``synthetic``); on a busy shared machine 1 thread is many
    times faster than torch's default, whose threads spin-wait for each other. The numbers agree
    to float rounding across thread counts. ``report``: also write the explanations and
    ``explain/report.html`` (:func:`humwatch.explain.explain_run`) once the table is done.
    ``device``: where the models run (``auto``, ``cpu``, ``cuda``, ...; not part of a cell's
    fingerprint, so finished cells are kept when it changes).
    """
    if threads is None and synthetic:
        threads = 1  # tiny models gain nothing from more threads, and lose a lot on a busy machine
    if threads is not None:
        whole_number(threads, "--threads", 1)
    with orchestrator.torch_threads(threads):
        return _reproduce(
            data,
            out,
            config,
            machines=machines,
            rows=rows,
            weights_dir=weights_dir,
            synthetic=synthetic,
            precision=precision,
            progress=progress,
            on_cell=on_cell,
            snr=snr,
            report=report,
            device=device,
        )


def _reproduce(data, out, config, *, machines, rows, weights_dir, synthetic, precision, progress, on_cell, snr, report, device) -> Table3:
    t0 = time.time()
    out = Path(out)
    from humwatch.io import check_out_folder, mark_folder

    check_out_folder(
        out,
        replace=False,
        kind="reproduce",
        legacy=("table3.json", "cells"),
        inputs=[data, weights_dir, None if isinstance(config, StudyConfig) else config],
    )
    cfg = config if isinstance(config, StudyConfig) else load_study_config(config)
    if cfg.converted:
        console.print(
            f"[yellow]{cfg.source}: the old study.yaml dialect, read as method specs ({out / 'study.yaml'} holds it in the new one)[/]"
        )
    if precision is not None:
        cfg = with_precision(cfg, precision)
    if snr is not None:
        from humwatch.data.common import normalize_snr

        if str(snr).lower() != "all":
            normalize_snr(snr)  # a wrong level is refused now, not by every cell
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
    mark_folder(out, "reproduce")
    if synth is not None:
        data = synthetic_data(out, synth, progress=progress)
    cells = plan_cells(cfg, data, out, rows=rows, machines=machines, weights_dir=weights_dir, device=device)

    meta = _meta(cfg, data, synth, weights_dir)
    _write_config(out, cfg, meta)
    records: list[dict] = []

    def each(rec: dict) -> None:
        records.append(rec)
        if on_cell:
            on_cell(rec)
        write_tables(out, records, {**meta, "seconds": round(time.time() - t0, 2)})

    orchestrator.run_jobs(
        cells,
        out,
        records="cells",
        run=lambda cell, run_dir: _run(cell, run_dir, progress),
        failed=_failed,
        on_record=each,
        check_run_dir=False,
        title=lambda cell: f"[bold]Table III cell {cell.row} / {cell.column}[/]",
    )
    meta["seconds"] = round(time.time() - t0, 2)
    write_tables(out, records, meta)
    if report:
        write_report_for(out)
    return Table3(records, out, meta)


def write_report_for(out: Path) -> Path | None:
    """The explanations and report.html of a reproduce directory; a figure that cannot be drawn is
    noted in the report, and a report that cannot be written at all is said, not raised (the
    table is the result; the report explains it)."""
    from humwatch.explain import explain_run

    console.print("[bold]drawing the explanations (report.html)[/]")
    try:
        res = explain_run(out)
    except HumwatchError as e:
        console.print(f"[yellow]report not written: {e}[/]")
        return None
    console.print(f"report: {res.report}")
    return res.report


def _run(cell: CellSpec, run_dir: Path, progress: bool) -> dict:
    t = time.time()
    return cell_record(cell, "ok", run_cell(cell, run_dir, progress), time.time() - t)


def _failed(cell: CellSpec, reason: str, seconds: float) -> dict:
    if cell.method != "autoencoder" and "--weights " in reason:
        reason += f"; here: --weights-dir DIR holding {cell.run_config.settings.get('backbone')} (see humwatch.reproduce.WEIGHTS_DIR_NAMES)"
    return cell_record(cell, "failed", None, seconds, reason)


def _meta(cfg: StudyConfig, data: Any, synth: SyntheticSettings | None, weights_dir: Any) -> dict:
    from humwatch.runinfo import environment

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
