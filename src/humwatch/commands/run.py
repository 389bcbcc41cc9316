"""`humwatch run` (one method over a dataset) and `humwatch finetune` (the same with the study's head)."""

from __future__ import annotations

import typer

from humwatch.commands import options as o


def print_results(result) -> None:
    """The run's table on the terminal (plain lines when the output is not a terminal)."""
    from humwatch.metrics import few_clips_warnings

    extra = [k for k in (result.rows[0] if result.rows else {}) if k.startswith("auc_") and k != "auc_ci"]
    fmt = lambda v: "n/a" if v != v else f"{v:.4f}"  # noqa: E731  (NaN when a group lacks a class)
    rows = []
    for r in result.rows:
        lo, hi = r["auc_ci"]
        rows.append(
            [
                r["machine_type"],
                r["machine_id"],
                fmt(r["auc"]),
                "n/a" if lo != lo else f"{lo:.3f}-{hi:.3f}",
                fmt(r["pauc"]),
                *(fmt(r[k]) for k in extra),
                str(r["n_normal"]),
                str(r["n_anomalous"]),
            ]
        )
    con = o.console()
    o.print_table(
        con,
        f"humwatch run: {result.info['label']}",
        ["machine type", "id", "AUC", "95% CI", "pAUC", *(f"AUC ({k[4:]})" for k in extra), "normal", "anomalous"],
        rows,
    )
    for w in few_clips_warnings(result.rows):
        con.print(f"[yellow]warning: {w}[/]")
    if result.info.get("random_init"):
        con.print(f"[bold red]{result.info['weights']}[/]")
    if result.skipped:
        con.print(f"[yellow]skipped {len(result.skipped)} bad file(s); see results.json[/]")


@o.with_method_options()
def run_cmd(
    out: o.OutDir,
    data: o.DataOrSplit = None,
    method: o.Method = "autoencoder",
    layout: o.Layout = "auto",
    machines: o.Machines = None,
    ids: o.Ids = None,
    snr: o.Snr = None,
    per_id: o.PerId = False,
    seed: o.Seed = 0,
    split: o.Split = None,
    dataset_split: o.DatasetSplit = None,
    dataset_val: o.DatasetVal = 0.0,
    channel: o.Channel = None,
    skip_bad: o.SkipBad = False,
    save_model: o.SaveModel = False,
    format_: o.Format = "humwatch",
    overwrite: o.Overwrite = False,
    cache: o.Cache = None,
    device: o.Device = "auto",
    engine: o.EngineName = "local",
    ray_address: o.RayAddress = None,
    quiet: o.Quiet = False,
    method_options: dict | None = None,
):
    """Run one method over a dataset: results.json, results.md, scores.csv and split.csv in OUT."""
    from rich.markup import escape

    from humwatch.engine import get_engine
    from humwatch.pipeline import RunConfig, run

    settings = o.method_settings_from_options(method, method_options)
    cfg = RunConfig(
        data=str(data) if data else None,
        method=method,
        settings=settings,
        layout=layout,
        machines=o.csv_list(machines),
        ids=o.csv_list(ids),
        snr=snr,
        per_id=per_id,
        seed=seed,
        split_csv=str(split) if split else None,
        dataset_split=dataset_split,
        dataset_val_fraction=dataset_val,
        channel=channel,
        skip_bad=skip_bad,
        save_models=save_model,
        dcase_output=format_ == "dcase",
        cache_dir=str(cache or o.default_cache_dir()),
        device=device,
    )
    cfg.validate()  # every setting checked before an engine (a Ray cluster) is started
    with get_engine(engine, ray_address) as eng:
        result = run(cfg, out, progress=not quiet, overwrite=overwrite, engine=eng)
    print_results(result)
    con = o.console()
    if result.info.get("split"):
        con.print(f"split: {escape(result.info['split'])}")
    for note in result.info.get("notes", ()):
        con.print(f"[yellow]warning: {escape(note)}[/]")
    for name, rep in result.info.get("groups", {}).items():
        val = (rep.get("training") or {}).get("val") or {}
        if val:
            con.print(f"{name}: validation AUC {val['auc']:.4f}, loss {val['loss']:.4f} ({val['n']} clips)")
        held = (rep.get("training") or {}).get("n_held_out")
        if held and not any(c.split == "val" for c in result.clips):  # taken from the training clips: say so
            con.print(f"{name}: early stopping held out {held} of the training clips (no validation clips; --dataset-val gives it some)")
    con.print(f"results in {out}")


finetune_cmd = o.specialize(
    run_cmd,
    """Fine-tune a backbone with the study's head on train clips of both labels; score the test clips
    (the same as `humwatch run --method finetune`).""",
    method="finetune",
    detector=None,
    detector_params=None,
    standardize=None,
    cache=None,
    format_="humwatch",
    engine="local",
    ray_address=None,
)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("finetune")(finetune_cmd)
