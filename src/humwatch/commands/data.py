"""`humwatch synth` (the built-in data), `humwatch features` (a clip's model input) and `humwatch embed`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from humwatch.commands import options as o
from humwatch.settings import SEED


def synth_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the tree into.")],
    layout: Annotated[
        Literal["mimii", "dcase2023", "dcase2024"],
        typer.Option(
            help="mimii (MIMII's folders) or dcase2023 / dcase2024 (a DCASE Task 2 development set with source and target domains)."
        ),
    ] = "mimii",
    machines: Annotated[str, typer.Option(help="Machine types, comma separated.")] = "fan,pump,valve,slider",
    ids: Annotated[Optional[str], typer.Option(help="mimii: machine ids, comma separated (default 00,02,04,06).")] = None,
    normal: Annotated[Optional[int], typer.Option(help="mimii: normal clips per machine id (default 40).", min=0)] = None,
    anomalous: Annotated[Optional[int], typer.Option(help="mimii: anomalous clips per machine id (default 12).", min=0)] = None,
    sections: Annotated[Optional[str], typer.Option(help="dcase: sections (machines), comma separated (default 00).")] = None,
    source_train: Annotated[
        Optional[int], typer.Option(help="dcase: source-domain training clips per section (default 50).", min=0)
    ] = None,
    target_train: Annotated[Optional[int], typer.Option(help="dcase: target-domain training clips per section (default 3).", min=0)] = None,
    test: Annotated[Optional[int], typer.Option(help="dcase: test clips per section, domain and label (default 10).", min=0)] = None,
    snr: Annotated[float, typer.Option(help="Machine-to-background SNR in dB (MIMII: 6, 0, -6).")] = 6.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same bytes.", callback=o.checked(SEED, "--seed"))] = 0,
    seconds: Annotated[float, typer.Option(help="Clip length in seconds.")] = 10.0,
    quiet: o.Quiet = False,
):
    """Generate physically motivated machine sounds in the MIMII layout (the built-in data) or as a
    DCASE 2023/2024 development set with domain shift."""
    from humwatch.errors import ConfigError
    from humwatch.io import check_out_folder

    mimii_only = {"--ids": ids, "--normal": normal, "--anomalous": anomalous}
    dcase_only = {"--sections": sections, "--source-train": source_train, "--target-train": target_train, "--test": test}
    wrong = [k for k, v in (dcase_only if layout == "mimii" else mimii_only).items() if v is not None]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)}: not an option of --layout {layout}")
    check_out_folder(out, replace=False, kind="data", legacy=("manifest.csv", "ground_truth.csv"))
    if layout == "mimii":
        from humwatch.data.synth import synthesize

        clips = synthesize(
            out,
            machines=o.csv_list(machines),
            ids=o.csv_list(ids or "00,02,04,06"),
            n_normal=40 if normal is None else normal,
            n_anomalous=12 if anomalous is None else anomalous,
            snr_db=snr,
            seed=seed,
            seconds=seconds,
            progress=not quiet,
        )
    else:
        from humwatch.data.synth import synthesize_dcase

        clips = synthesize_dcase(
            out,
            year=int(layout[-4:]),
            machines=o.csv_list(machines),
            sections=o.csv_list(sections or "00"),
            n_source_train=50 if source_train is None else source_train,
            n_target_train=3 if target_train is None else target_train,
            n_test=10 if test is None else test,
            snr_db=snr,
            seed=seed,
            seconds=seconds,
            progress=not quiet,
        )
    n_anom = sum(c.label for c in clips)
    o.console().print(f"wrote {len(clips)} clips ({len(clips) - n_anom} normal, {n_anom} anomalous) to {out}")


def features_cmd(
    file: Annotated[Path, typer.Argument(help="An audio file.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the .npy array.")],
    frontend: Annotated[Literal["ae", "cnn", "ast"], typer.Option(help="ae (autoencoder), cnn (ResNeXt) or ast (AST).")] = "ae",
    channel: o.Channel = None,
):
    """Export a clip's model input (log-mel features) as a .npy array."""
    import numpy as np

    from humwatch.audio import AudioSettings, load_audio
    from humwatch.data.clips import Clip
    from humwatch.features import get_frontend
    from humwatch.io import atomic_path
    from humwatch.reader import checked

    fe = get_frontend(frontend)
    o.check_out_file(out, ".npy", inputs=[file])
    notes: list[str] = []
    x = checked(fe, load_audio(file, AudioSettings(channel=channel), notes=notes), Clip(str(file), "clip", "", 0))
    with atomic_path(out, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, x)
    con = o.console()
    for n in notes:
        con.print(f"note: {n}")
    con.print(f"{file}: {frontend} features {tuple(x.shape)} -> {out}")


@o.with_method_options("backbone", "weights", "precision", "backbone_config", "batch_size")
def embed_cmd(
    data: o.Data,
    out: Annotated[Path, typer.Option("--out", help="Where to write the .npz (X, path, label, machine_type, machine_id, split).")],
    layout: o.Layout = "auto",
    machines: o.Machines = None,
    ids: o.Ids = None,
    snr: o.Snr = None,
    cache: o.Cache = None,
    channel: o.Channel = None,
    skip_bad: o.SkipBad = False,
    device: o.Device = "auto",
    engine: o.EngineName = "local",
    ray_address: o.RayAddress = None,
    quiet: o.Quiet = False,
    method_options: dict | None = None,
):
    """Embed every clip of a dataset with a backbone (batched, cached on disk; the network is built
    only when a clip is not in the cache)."""
    from humwatch.audio import AudioSettings
    from humwatch.data import load_dataset
    from humwatch.engine import get_engine
    from humwatch.methods import BackboneSettings, Context
    from humwatch.reader import ClipReader

    o.check_out_file(out, ".npz", inputs=[data])
    opts = dict(method_options or {})
    batch_size = opts.pop("batch_size") or 8
    opts["backbone_config"] = o.json_dict(opts["backbone_config"], "--backbone-config")
    spec = BackboneSettings.from_dict({k: v for k, v in opts.items() if v is not None}, where="embed")
    clips = load_dataset(data, layout=layout, machines=o.csv_list(machines), ids=o.csv_list(ids), snr=snr)
    reader = ClipReader(AudioSettings(channel=channel), "skip" if skip_bad else "error", not quiet)
    bb = Context(device=device).backbone(spec)
    con = o.console()
    if bb.weights.random_init:
        con.print(f"[bold red]{bb.name}: {bb.weights.describe()}[/]")
    with get_engine(engine, ray_address) as eng:
        emb = eng.embed(clips, bb, cache_dir=cache or o.default_cache_dir(), batch_size=batch_size, reader=reader)
    emb.save_npz(out)
    con.print(f"{len(emb.clips)} embeddings of {bb.embedding_dim} values ({bb.precision}, {bb.weights.describe()}) -> {out}")
    hits = emb.stats.get("cache_hits", 0)
    if hits:
        con.print(f"{hits} from the cache, {emb.stats.get('computed', 0)} computed")
    if emb.skipped:
        con.print(f"[yellow]skipped {len(emb.skipped)} bad file(s)[/]")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth_cmd)
    app.command("features")(features_cmd)
    app.command("embed")(embed_cmd)
