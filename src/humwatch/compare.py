"""``humwatch compare``: several methods on the same split, one leaderboard.

    OUT/split.csv                 the one split every method uses (made once, reused on a rerun)
    OUT/compare-data.json         what the split was made from (a rerun on other data is refused)
    OUT/runs/<name>/              one run directory per method (:mod:`humwatch.pipeline`)
    OUT/methods/<name>.json       each method's record: status, seconds, peak memory, AUCs
    OUT/compare.{md,csv,json}     the leaderboard (:mod:`humwatch.compare_report`)
    OUT/compare.png               AUC and pAUC, methods by machine type

Every method's settings are checked before any work. Methods run one after the other, each
through :func:`humwatch.pipeline.run`, sharing the embedding cache (a backbone's embeddings are
computed once for every method that uses it). By default each runs in a fresh process
(``isolate``), so that its peak memory (the process's maximum resident set) is its own and a crash
cannot take the others down; ``isolate=False`` runs them here (faster to start; no memory column).
It is resumable, through the orchestrator ``reproduce`` uses too (:func:`humwatch.orchestrator.run_jobs`):
a method whose record says it finished with the same :func:`humwatch.orchestrator.fingerprint`
(settings and split) is not run again, one whose settings changed runs again (its run directory
replaced), and a failed one is reported with its reason and retried next time.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from humwatch import orchestrator
from humwatch.errors import ConfigError
from humwatch.io import check_out_folder, file_sha256, mark_folder, read_json, write_json
from humwatch.methods.spec import MethodSpec, check_unique, spec_from_entry

DEFAULT_METHODS = ("autoencoder", "embed-detect:backbone=features,detector=mahalanobis,standardize=true", "idnet")
"""What ``humwatch compare`` runs when no method is named: the baseline and the two weight-free methods."""


@dataclass
class Comparison:
    """The outcome of :func:`compare`: one record per method, and where the files are."""

    records: list[dict]
    out: Path
    meta: dict

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] != "ok"]


def plan(specs: Sequence[str | dict | MethodSpec]) -> list[MethodSpec]:
    """Checked specs (every setting validated, names unique), before any work."""
    from humwatch.methods import method_settings

    out = [spec_from_entry(s, where=f"method {i + 1}") for i, s in enumerate(specs)]
    if not out:
        raise ConfigError("compare: no methods given")
    for sp in out:
        try:
            sp.given = sp.given or sp.text()  # as the user wrote it; the settings become every setting, checked
            sp.settings = method_settings(sp.method, sp.settings).to_dict()
        except ConfigError as e:
            raise ConfigError(f"method {sp.name}: {e}") from None
    return check_unique(out)


def compare(
    data: str | Path,
    specs: Sequence[str | dict | MethodSpec],
    out: str | Path,
    *,
    layout: str = "auto",
    machines: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    snr: str | None = None,
    per_id: bool = False,
    seed: int = 0,
    dataset_split: bool | None = None,
    dataset_val_fraction: float = 0.0,
    channel: int | None = None,
    skip_bad: bool = False,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    isolate: bool = True,
    progress: bool = True,
    title: str = "",
    on_method: Callable[[dict], None] | None = None,
    engine=None,
) -> Comparison:
    """Run every method of ``specs`` on one split of ``data`` and write the leaderboard in ``out``.
    ``engine`` (:mod:`humwatch.engine`, default local) runs the per-clip work of every method, as in
    ``humwatch run``; an isolated method's process joins the same engine (the same Ray)."""
    from humwatch.compare_report import write_report
    from humwatch.pipeline import RunConfig, prepare_clips, uses_dataset_split
    from humwatch.rundir import RunDir

    t0 = time.time()
    methods = plan(specs)
    out = Path(out)
    check_out_folder(out, replace=False, kind="compare", inputs=[data], legacy=("compare-data.json",))
    base = RunConfig(
        data=str(data),
        layout=layout,
        machines=list(machines) if machines else None,
        ids=list(ids) if ids else None,
        snr=snr,
        per_id=per_id,
        seed=seed,
        dataset_split=dataset_split,
        dataset_val_fraction=dataset_val_fraction,
        channel=channel,
        skip_bad=skip_bad,
        cache_dir=str(cache_dir) if cache_dir else None,
        device=device,
    )
    base.validate()
    base.dataset_split = uses_dataset_split(base)  # resolved before the stamp: a DCASE tree's own split by default
    source = {
        k: v
        for k, v in asdict(base).items()
        if k in ("data", "layout", "machines", "ids", "snr", "seed", "test_fraction", "val_fraction", "dataset_split")
    }
    if base.dataset_val_fraction:
        source["dataset_val_fraction"] = base.dataset_val_fraction
    split_csv = out / "split.csv"
    stamp = out / "compare-data.json"
    if split_csv.is_file() and stamp.is_file():
        if read_json(stamp) != source:  # a damaged stamp is a DamagedFileError, not "other data"
            raise ConfigError(f"{out}: holds a comparison of other data or another split; use another --out")
    else:
        clips = prepare_clips(base)
        mark_folder(out, "compare")
        RunDir(out).write_split(clips)
        write_json(stamp, source)
    split_hash = file_sha256(split_csv)
    jobs = [
        orchestrator.Job(
            sp,
            RunConfig(
                **{**asdict(base), "method": sp.method, "settings": dict(sp.settings), "split_csv": str(split_csv), "dataset_split": False}
            ),
            split_hash,
        )
        for sp in methods
    ]

    def run_one(job: orchestrator.Job, run_dir: Path) -> dict:
        t = time.time()
        got = orchestrator.execute(job, run_dir, isolate=isolate, threads=threads, progress=progress, engine=engine)
        got = got if isinstance(got, dict) else {}
        return method_record(job.spec, run_dir, got.get("seconds", time.time() - t), got.get("peak_rss_mb"))

    def failed(job: orchestrator.Job, reason: str, seconds: float) -> dict:
        return {**_identity(job.spec), "status": "failed", "reason": reason, "seconds": round(seconds, 2)}

    records = orchestrator.run_jobs(
        jobs,
        out,
        records="methods",
        run=run_one,
        failed=failed,
        on_record=on_method,
        title=lambda job: f"[bold]compare: {job.name}[/] ({job.spec.method})",
    )
    from humwatch.runinfo import environment

    meta = {
        "title": title or f"humwatch compare: {data}",
        "data": str(data),
        "snr": snr,
        "seed": seed,
        "machines": list(machines) if machines else None,
        "per_id": per_id,
        "dataset_split": base.dataset_split,
        "isolated": isolate,
        "torch_threads": threads,
        "engine": engine.describe() if engine is not None else "local",
        "seconds": round(time.time() - t0, 2),
        "date": time.strftime("%Y-%m-%d"),
        **environment(),
    }
    write_report(out, records, meta)
    return Comparison(records, out, meta)


def _identity(sp: MethodSpec) -> dict:
    return {"name": sp.name, "method": sp.method, "settings": sp.settings, "spec": sp.given or sp.text()}


def method_record(sp: MethodSpec, run_dir: Path, seconds: float, peak_rss_mb: float | None) -> dict:
    """One method's leaderboard entry, from its finished run directory."""
    from humwatch.metrics import official_score
    from humwatch.rundir import RunDir

    res = RunDir(run_dir).results()
    rows = res.get("rows") or []
    types = [r for r in rows if r["machine_id"] == "all"]
    per_id = [r for r in rows if r["machine_id"] != "all"]

    def mean(key, rs):
        vals = [float(r[key]) for r in rs if r.get(key) is not None and r[key] == r[key]]
        return sum(vals) / len(vals) if vals else None

    readings = sorted({k[4:] for r in rows for k in r if k.startswith("auc_") and k not in ("auc_source", "auc_target", "auc_ci")})
    return {
        **_identity(sp),
        "status": "ok",
        "label": res.get("label", sp.method),
        "weights": res.get("weights", ""),
        "random_init": bool(res.get("random_init")),
        "official_score": official_score(rows),
        "mean_auc": mean("auc", per_id),
        "mean_pauc": mean("pauc", per_id),
        "auc_source": mean("auc_source", per_id),
        "auc_target": mean("auc_target", per_id),
        "by_type": {r["machine_type"]: {k: r.get(k) for k in ("auc", "pauc", "auc_source", "auc_target")} for r in types},
        "rows": rows,
        "readings": {k: mean(f"auc_{k}", per_id) for k in readings},
        "outlier_exposure": res.get("outlier_exposure"),
        "n_scored": res.get("n_scored"),
        "skipped": len(res.get("skipped") or []),
        "seconds": round(float(seconds), 2),
        "peak_rss_mb": None if peak_rss_mb is None else round(float(peak_rss_mb), 1),
        "run_dir": f"runs/{sp.name}",
    }
