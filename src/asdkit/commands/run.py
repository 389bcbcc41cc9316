"""`asdkit run` (one method over a dataset) and `asdkit finetune` (the same with the study's head)."""

from __future__ import annotations

from pathlib import Path
import typer

from asdkit.commands import options as o


def print_results(result) -> None:
    """The run's table on the terminal."""
    from rich.table import Table

    extra = [k for k in (result.rows[0] if result.rows else {}) if k.startswith("auc_")]
    t = Table(title=f"asdkit run: {result.info['label']}")
    for col in ("machine type", "id", "AUC", "pAUC", *(f"AUC ({k[4:]})" for k in extra), "normal", "anomalous"):
        t.add_column(col, justify="right" if col not in ("machine type", "id") else "left")
    fmt = lambda v: "n/a" if v != v else f"{v:.4f}"  # noqa: E731  (NaN when a group lacks a class)
    for r in result.rows:
        t.add_row(r["machine_type"], r["machine_id"], fmt(r["auc"]), fmt(r["pauc"]), *(fmt(r[k]) for k in extra),
                  str(r["n_normal"]), str(r["n_anomalous"]))
    con = o.console()
    con.print(t)
    if result.info.get("random_init"):
        con.print(f"[bold red]{result.info['weights']}[/]")
    if result.skipped:
        con.print(f"[yellow]skipped {len(result.skipped)} bad file(s); see results.json[/]")


def _run(out: Path, method: str, quiet: bool, data: Path, settings: dict, **common):
    from asdkit.pipeline import RunConfig, run

    cfg = RunConfig(data=str(data), method=method, settings=settings, **common)
    return run(cfg, out, progress=not quiet)


def run_cmd(
    data: o.Data,
    out: o.OutDir,
    method: o.Method = "autoencoder",
    layout: o.Layout = "auto",
    machines: o.Machines = None,
    ids: o.Ids = None,
    snr: o.Snr = None,
    per_id: o.PerId = False,
    seed: o.Seed = 0,
    split: o.Split = None,
    channel: o.Channel = None,
    skip_bad: o.SkipBad = False,
    backbone: o.Backbone = None,
    weights: o.Weights = None,
    precision: o.Precision = None,
    backbone_config: o.BackboneConfig = None,
    detector: o.Detector = None,
    detector_params: o.DetectorParams = None,
    standardize: o.Standardize = None,
    epochs: o.Epochs = None,
    lr: o.Lr = None,
    batch_size: o.BatchSize = None,
    trainable_blocks: o.TrainableBlocks = None,
    block_unit: o.BlockUnit = None,
    set_: o.Set = None,
    save_model: o.SaveModel = False,
    cache: o.Cache = None,
    quiet: o.Quiet = False,
):
    """Run one method over a dataset: results.json, results.md, scores.csv and split.csv in OUT."""
    settings = o.method_settings_from_options(method, dict(
        backbone=backbone, weights=weights, precision=precision, backbone_config=backbone_config, detector=detector,
        detector_params=detector_params, standardize=standardize, epochs=epochs, lr=lr, batch_size=batch_size,
        trainable_blocks=trainable_blocks, block_unit=block_unit), set_)
    result = _run(out, method, quiet, data, settings, layout=layout, machines=o.csv_list(machines), ids=o.csv_list(ids),
                  snr=snr, per_id=per_id, seed=seed, split_csv=str(split) if split else None, channel=channel,
                  skip_bad=skip_bad, save_models=save_model, cache_dir=str(cache or o.default_cache_dir()))
    print_results(result)
    o.console().print(f"results in {out}")


def finetune_cmd(
    data: o.Data,
    out: o.OutDir,
    backbone: o.Backbone = None,
    weights: o.Weights = None,
    precision: o.Precision = None,
    backbone_config: o.BackboneConfig = None,
    layout: o.Layout = "auto",
    machines: o.Machines = None,
    ids: o.Ids = None,
    snr: o.Snr = None,
    per_id: o.PerId = False,
    epochs: o.Epochs = None,
    lr: o.Lr = None,
    batch_size: o.BatchSize = None,
    trainable_blocks: o.TrainableBlocks = None,
    block_unit: o.BlockUnit = None,
    seed: o.Seed = 0,
    split: o.Split = None,
    channel: o.Channel = None,
    skip_bad: o.SkipBad = False,
    save_model: o.SaveModel = False,
    quiet: o.Quiet = False,
):
    """Fine-tune a backbone with the study's head on train clips of both labels; score the test clips
    (the same as `asdkit run --method finetune`)."""
    settings = o.method_settings_from_options("finetune", dict(
        backbone=backbone, weights=weights, precision=precision, backbone_config=backbone_config, epochs=epochs, lr=lr,
        batch_size=batch_size, trainable_blocks=trainable_blocks, block_unit=block_unit))
    res = _run(out, "finetune", quiet, data, settings, layout=layout, machines=o.csv_list(machines), ids=o.csv_list(ids),
               snr=snr, per_id=per_id, seed=seed, split_csv=str(split) if split else None, channel=channel,
               skip_bad=skip_bad, save_models=save_model)
    con = o.console()
    con.print((Path(out) / "results.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    for name, rep in res.info.get("groups", {}).items():
        val = (rep.get("training") or {}).get("val") or {}
        if val:
            con.print(f"{name}: validation AUC {val['auc']:.4f}, loss {val['loss']:.4f} ({val['n']} clips)")
    if res.info.get("random_init"):
        con.print(f"[bold red]{res.info['weights']}[/]")
    con.print(f"results in {out}")


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("finetune")(finetune_cmd)


