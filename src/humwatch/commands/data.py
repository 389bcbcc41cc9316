"""`humwatch synth` (the built-in data), `humwatch features` (a clip's model input) and `humwatch embed`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from humwatch.commands import options as o


def synth_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the MIMII-layout tree into.")],
    machines: Annotated[str, typer.Option(help="Machine types, comma separated.")] = "fan,pump,valve,slider",
    ids: Annotated[str, typer.Option(help="Machine ids, comma separated.")] = "00,02,04,06",
    normal: Annotated[int, typer.Option(help="Normal clips per machine id.", min=0)] = 40,
    anomalous: Annotated[int, typer.Option(help="Anomalous clips per machine id.", min=0)] = 12,
    snr: Annotated[float, typer.Option(help="Machine-to-background SNR in dB (MIMII: 6, 0, -6).")] = 6.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same bytes.", min=0)] = 0,
    seconds: Annotated[float, typer.Option(help="Clip length in seconds.")] = 10.0,
    quiet: o.Quiet = False,
):
    """Generate physically motivated machine sounds in the MIMII layout (the built-in data)."""
    from humwatch.data.synth import synthesize
    from humwatch.io import check_out_folder

    check_out_folder(out, replace=False, kind="data", legacy=("manifest.csv",))
    clips = synthesize(
        out, machines=o.csv_list(machines), ids=o.csv_list(ids), n_normal=normal, n_anomalous=anomalous,
        snr_db=snr, seed=seed, seconds=seconds, progress=not quiet,
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
    from humwatch.features import get_frontend
    from humwatch.io import atomic_path

    from humwatch.data.clips import Clip
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
    bb = Context(reader=reader, device=device).backbone(spec)
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
