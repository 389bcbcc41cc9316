"""The command line's shared options: every option is defined once here (name, type, choices, help)
and used by every command that takes it, so their help texts agree; plus the parsing helpers."""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path
from typing import Annotated, Any, List, Literal, Optional

import typer

from humwatch.errors import ConfigError
from humwatch.service.config import BATCH_WAIT_MS, MAX_BATCH, PORT, RETRIES, THREADS
from humwatch.settings import CHANNEL, FRACTION, SEED, WINDOW_SECONDS, Rule, check_value, describe


def checked(rule: Rule, option: str):
    """A typer ``callback`` checking the option's value by ``rule`` (:mod:`humwatch.settings`: the
    rule every other place that takes the value checks it by), so an out-of-range value is one line
    ``error: OPTION must be ..., got VALUE`` in the same words as a settings file's or a saved monitor's."""

    def callback(value):
        return value if value is None else check_value(value, rule, option)

    return callback


def ranged(help: str, rule: Rule) -> str:
    """``help`` with what ``rule`` accepts, e.g. ``(a whole number 0 or more)``."""
    return f"{help} ({describe(rule)})"


def ranged_option(rule: Rule, option: str, help: str):
    """A typer option ``option`` checked by ``rule``, its help saying what ``rule`` accepts."""
    return typer.Option(option, help=ranged(help, rule), callback=checked(rule, option))


# -------------------------------------------------------------------------------------- choices

Layouts = Literal["auto", "mimii", "dcase", "folder", "recordings", "csv"]
Methods = Literal["autoencoder", "embed-detect", "finetune", "idnet", "aux-finetune", "embed-fusion", "score-fusion"]
"""Every entry of :data:`humwatch.methods.METHODS` (tests/test_cli.py checks that they agree)."""
BACKBONES_TEXT = "ast, resnext101_32x8d, autoencoder, features, features-segments, twfr, idnet, hf-audio"
DETECTORS_TEXT = "lof-vote, lof, knn, mahalanobis, gmm, iforest, knn-ldn"
"""The backbone and detector registries' names, written out so that the help does not import torch
and scikit-learn to list them (tests/test_cli.py checks that they agree with the registries); a
wrong name is refused by the method's settings check before any work."""

# ------------------------------------------------------------------------------ data and splits

Data = Annotated[Path, typer.Option("--data", help="Dataset root (MIMII, DCASE, a normal/abnormal folder) or a CSV manifest.")]
DataOrSplit = Annotated[
    Optional[Path],
    typer.Option("--data", help="Dataset root (MIMII, DCASE, a normal/abnormal folder) or a CSV manifest (not needed with --split)."),
]
Layout = Annotated[Layouts, typer.Option(help="Dataset layout (auto tells them apart by their names).")]
Machines = Annotated[Optional[str], typer.Option(help="Only these machine types (comma separated, e.g. fan,pump).")]
Ids = Annotated[Optional[str], typer.Option(help="Only these machine ids (comma separated, e.g. 00,02).")]
Snr = Annotated[Optional[str], typer.Option(help="MIMII noise level when the tree holds several (6dB, 0dB, -6dB, or all).")]
PerId = Annotated[bool, typer.Option("--per-id", help="Train one model per machine id (the MIMII baseline) instead of one per type.")]
Seed = Annotated[int, typer.Option(help=ranged("Seed for the split and the models.", SEED), callback=checked(SEED, "--seed"))]
Split = Annotated[Optional[Path], typer.Option(help="Reuse a saved split.csv instead of splitting.")]
DatasetSplit = Annotated[
    Optional[bool],
    typer.Option(
        "--dataset-split/--study-split",
        help="The dataset's own train/test split (DCASE folders, a manifest's split column) or the study's (25 % test, 10 % of the rest validation, per machine, id and label). Default: the dataset's own on a DCASE tree, the study's otherwise.",
        show_default=False,
    ),
]
DatasetVal = Annotated[
    float,
    typer.Option(
        "--dataset-val",
        help="With the dataset's own split: hold out this share of the training clips for validation (default 0: every training clip trains).",
        callback=checked(FRACTION, "--dataset-val"),
    ),
]
Channel = Annotated[
    Optional[int],
    typer.Option(help="Use one microphone (0, 1, ...) instead of the mean of all channels.", callback=checked(CHANNEL, "--channel")),
]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Skip unreadable files (counted in the results) instead of stopping.")]
Cache = Annotated[Optional[Path], typer.Option(help="Embedding cache folder (default: $HUMWATCH_CACHE or ~/.cache/humwatch).")]
OutDir = Annotated[
    Path, typer.Option("--out", help="Run directory to write (config.json, split.csv, scores.csv, results.json, results.md).")
]
Device = Annotated[str, typer.Option(help="Where models run: auto (a GPU when there is one), cpu, cuda (or cuda:N), mps.")]
Format = Annotated[
    Literal["humwatch", "dcase"],
    typer.Option(
        "--format", help="dcase: also write the DCASE Task 2 files (anomaly_score_*, decision_result_*, result.csv) into OUT/dcase."
    ),
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace OUT if it already holds files (it is replaced only once the new one is complete).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Threads = Annotated[
    Optional[int], typer.Option(help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy shared machine).", min=1)
]
EngineName = Annotated[
    Literal["local", "ray"],
    typer.Option(
        "--engine", help="Where per-clip work runs: local (this process) or ray (a Ray cluster, or a Ray started here; docs/scale.md)."
    ),
]
Runtime = Annotated[
    Literal["auto", "torch", "onnx", "openvino"],
    typer.Option(
        help="What runs the monitor's network: auto (OpenVINO for a monitor exported for it, where installed; ONNX Runtime for an ONNX export when PyTorch is not installed; else PyTorch), torch, onnx (a monitor written by `humwatch export`) or openvino (an export, or a monitor whose network is converted once and cached in --cache)."
    ),
]
RayAddress = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address", help="Ray cluster to join with --engine ray (default: $RAY_ADDRESS, else a Ray started on this machine)."
    ),
]
SaveModel = Annotated[
    bool, typer.Option("--save-model", help="Also save each fitted model to OUT/models/<group>/ (the autoencoder's always are).")
]

# ------------------------------------------------------------------------------------- methods

METHOD_HELP = "The method: autoencoder (MIMII baseline), embed-detect (backbone embeddings + detector), finetune (the study's supervised head), idnet (an ID network trained from scratch + kNN), aux-finetune (a backbone's top fine-tuned on the ID task + kNN), embed-fusion (several backbones' embeddings + detector), score-fusion (several methods' scores averaged)."
Method = Annotated[Methods, typer.Option(help=METHOD_HELP)]
MonitorMethod = Annotated[
    Optional[Methods],
    typer.Option(
        "--method",
        help=METHOD_HELP + " Default: embed-detect with AST, or with the weight-free features backbone when AST's weights are not here.",
        show_default=False,
    ),
]
Backbone = Annotated[Optional[str], typer.Option(help=f"Embedding backbone: {BACKBONES_TEXT} (default: ast).")]
Weights = Annotated[
    Optional[str],
    typer.Option(help="Backbone weights: 'default' (the study's, from the hub), a hub id, a local folder/file, or 'none' (random init)."),
]
Precision = Annotated[
    Optional[Literal["auto", "fp32", "bf16"]],
    typer.Option(
        help="auto (the default: bf16 where the CPU or GPU does bf16 natively, AMX-BF16 / AVX512-BF16 / CUDA bf16; fp32 elsewhere), fp32, or bf16 autocast."
    ),
]
BackboneConfig = Annotated[
    Optional[str], typer.Option(help="Architecture overrides as JSON (e.g. a tiny model for a quick try: '{\"num_hidden_layers\": 2}').")
]
Detector = Annotated[
    Optional[str], typer.Option(help=f"Anomaly detector on the embeddings: {DETECTORS_TEXT} (default: lof-vote, the study's).")
]
DetectorParams = Annotated[Optional[str], typer.Option(help="Detector hyper-parameters as JSON (e.g. '{\"n_neighbors\": 8}').")]
Standardize = Annotated[
    Optional[bool], typer.Option("--standardize/--no-standardize", help="Standardise embeddings before the detector.", show_default=False)
]
Epochs = Annotated[Optional[int], typer.Option(help="Training epochs (autoencoder: 50, finetune: 1 by default).")]
Lr = Annotated[Optional[float], typer.Option(help="Learning rate (finetune: of the head; the top block gets lr/10, the next lr/100 ...).")]
BatchSize = Annotated[Optional[int], typer.Option(help="Clips (finetune, embed-detect) or context vectors (autoencoder) per step.")]
TrainableBlocks = Annotated[
    Optional[int], typer.Option(help="finetune: backbone blocks trained from the top (the rest frozen; default 2).")
]
BlockUnit = Annotated[
    Optional[Literal["stage", "bottleneck"]],
    typer.Option(help="finetune: a block is a ResNeXt stage, or one bottleneck module (the study's 'bottleneck layer 3/2')."),
]
Set = Annotated[
    Optional[List[str]],
    typer.Option("--set", help="Any other method setting as KEY=VALUE (VALUE read as JSON when it parses; repeatable)."),
]

# The options above that set a method's settings carry no min=/max=: the method's own Settings rule
# checks them (one rule per setting; idnet's batch_size, say, needs 2 or more where others need 1).
METHOD_OPTIONS = {
    "backbone": Backbone,
    "weights": Weights,
    "precision": Precision,
    "backbone_config": BackboneConfig,
    "detector": Detector,
    "detector_params": DetectorParams,
    "standardize": Standardize,
    "epochs": Epochs,
    "lr": Lr,
    "batch_size": BatchSize,
    "trainable_blocks": TrainableBlocks,
    "block_unit": BlockUnit,
    "set_": Set,
}
"""The options that set a method's settings, in the order the help lists them."""


def with_method_options(*names: str):
    """Decorator: give a command the method-setting options ``names`` (all of :data:`METHOD_OPTIONS`
    when none are named), after its own. They reach the command as one mapping, its parameter
    ``method_options`` ({setting: value, or None when not given}), for
    :func:`method_settings_from_options`."""
    chosen = list(names) or list(METHOD_OPTIONS)

    def deco(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "method_options"]
        extra = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=METHOD_OPTIONS[n]) for n in chosen]

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(method_options={n: kwargs.pop(n) for n in chosen}, **kwargs)

        command.__signature__ = sig.replace(parameters=own + extra)
        command.__annotations__ = {p.name: p.annotation for p in own + extra}
        del command.__wrapped__  # typer reads the signature above, not the function's own
        return command

    return deco


def specialize(command, doc: str, **fixed):
    """A command that is ``command`` with the options in ``fixed`` set (and left out of its help)."""
    sig = inspect.signature(command)

    @functools.wraps(command)
    def special(**kwargs):
        return command(**fixed, **kwargs)

    special.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name not in fixed])
    special.__annotations__ = {k: v for k, v in command.__annotations__.items() if k not in fixed}
    special.__doc__ = doc
    special.__dict__.pop("__wrapped__", None)
    return special


OPTION_OF_SETTING = {
    "backbone": "--backbone",
    "weights": "--weights",
    "precision": "--precision",
    "backbone_config": "--backbone-config",
    "detector": "--detector",
    "detector_params": "--detector-params",
    "standardize": "--standardize",
    "epochs": "--epochs",
    "lr": "--lr",
    "batch_size": "--batch-size",
    "trainable_blocks": "--trainable-blocks",
    "block_unit": "--block-unit",
}


def method_settings_from_options(method: str, given: dict[str, Any], defaults: dict | None = None) -> dict:
    """The method's settings from the options the user gave (None = not given; ``set_``: the
    ``--set KEY=VALUE`` pairs) over the command's own ``defaults``; an option that does not apply
    to the method is a one-line error."""
    from humwatch.methods import method_class

    known = set(method_class(method).Settings.defaults())
    out = {k: v for k, v in (defaults or {}).items() if k in known}
    given = dict(given)
    sets = given.pop("set_", None)
    for key, value in given.items():
        if value is None:
            continue
        if key in ("backbone_config", "detector_params"):
            value = json_dict(value, OPTION_OF_SETTING[key])
        if key not in known:
            raise ConfigError(
                f"{OPTION_OF_SETTING.get(key, key)} does not apply to --method {method} (its settings: {', '.join(sorted(known))})"
            )
        out[key] = value
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key = key.strip().replace("-", "_")
        if key not in known:
            raise ConfigError(f"--set {key}: {method} has no such setting (its settings: {', '.join(sorted(known))})")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


CompareMethods = Annotated[
    Optional[List[str]],
    typer.Option(
        "--methods",
        help="Methods to compare, each NAME[:KEY=VALUE,...] (e.g. 'autoencoder,embed-detect:backbone=features,detector=knn,idnet:epochs=10'; NAME=SPEC names a method; repeatable).",
    ),
]
MethodsFile = Annotated[
    Optional[Path],
    typer.Option(
        "--methods-file",
        help="YAML or JSON file of named method specs ({name: 'idnet:epochs=10'} or {name: {method: ..., settings: {...}}}).",
    ),
]
CompareOut = Annotated[
    Path, typer.Option("--out", help="Folder for the leaderboard (compare.md/.csv/.json/.png), one run directory per method and the split.")
]
InProcess = Annotated[
    bool, typer.Option("--in-process", help="Run the methods in this process (faster to start; no per-method peak memory).")
]

# ------------------------------------------------------------------------------------- helpers


def default_cache_dir() -> Path:
    """Where the command line caches embeddings: $HUMWATCH_CACHE, else ~/.cache/humwatch."""
    return Path(os.environ.get("HUMWATCH_CACHE") or Path.home() / ".cache" / "humwatch")


def csv_list(value: Optional[str]) -> Optional[list[str]]:
    """``"fan, pump"`` -> ``["fan", "pump"]``; None stays None; an empty list is an error."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"empty list: {value!r}")
    return items


def json_dict(value: Optional[str], option: str) -> Optional[dict]:
    """A JSON object given on the command line (None stays None)."""
    if value is None:
        return None
    try:
        d = json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{option}: not valid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{option}: must be a JSON object, e.g. '{{\"num_hidden_layers\": 2}}'")
    return d


def console(stderr: bool = False):
    """The console the commands print to (stderr when stdout carries the results)."""
    from rich.console import Console

    return Console(stderr=stderr)


def print_table(con, title: str, columns: list[str], rows: list[list[str]], **table_options) -> None:
    """A table on the console: box-drawn on a terminal; for a pipe or a file, plain tab-separated
    lines that scripts can read (``# title``, a header, then one line per row)."""
    if con.is_terminal:
        from rich.table import Table

        t = Table(title=title, **table_options)
        for c in columns:
            t.add_column(c)
        for r in rows:
            t.add_row(*r)
        con.print(t)
        return
    from rich.text import Text

    plain = lambda v: Text.from_markup(str(v)).plain.replace("\n", " ")  # noqa: E731  (markup read, not shown)
    for line in [f"# {title}", "\t".join(columns), *("\t".join(plain(v) for v in r) for r in rows)]:
        print(line, file=con.file)  # rich would expand the tabs


def check_out_file(out: Path, suffix: str, inputs=()) -> None:
    """Refuse, before any work, an output file that cannot or must not be written
    (:func:`humwatch.io.check_out_file`: the wrong suffix, a folder, a device, one of ``inputs``, ...)."""
    from humwatch.io import check_out_file as check

    check(out, suffix, inputs)


# ------------------------------------------------------------------------------------- service

Monitors = Annotated[
    Path, typer.Argument(help="Folder of monitors, one per machine: MONITORS/<machine>/ (written by `humwatch fit --out`).")
]
MonitorsOption = Annotated[
    Optional[Path], typer.Option("--monitors", help="The server's folder of monitors (its default database is there).")
]
Db = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        help="Database URL: sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB (default: SQLite file MONITORS/humwatch-service.db).",
    ),
]
Host = Annotated[str, typer.Option(help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every network (put TLS in front).")]
Port = Annotated[int, typer.Option(envvar="HUMWATCH_PORT", help="TCP port (or $HUMWATCH_PORT).", callback=checked(PORT, "--port"))]
Workers = Annotated[int, typer.Option(help="Server processes; each loads every monitor (use PostgreSQL with several).", min=1, max=64)]
MaxBatch = Annotated[
    int, ranged_option(MAX_BATCH, "--max-batch", "Concurrent clips of one machine scored in one forward pass, at most (1: each alone).")
]
BatchWaitMs = Annotated[
    float, ranged_option(BATCH_WAIT_MS, "--batch-wait-ms", "How long a batch waits for more clips after its first (ms).")
]
ServeThreads = Annotated[
    int, ranged_option(THREADS, "--threads", "Threads per torch or BLAS operation in each server process (0: every core).")
]
MaxUploadMb = Annotated[float, typer.Option(help="Largest upload accepted (MB).")]
MaxSeconds = Annotated[float, typer.Option(help="Longest audio accepted (seconds).")]
AlertRuleOption = Annotated[
    str,
    typer.Option(
        "--alert-rule",
        help="K/N/M: K anomalous clips of a machine's last N open an alert, M normal ones in a row close it (per machine: PUT /api/v1/machines/NAME/alert-rule).",
    ),
]
KeepAudio = Annotated[
    bool, typer.Option("--keep-audio/--no-keep-audio", help="Keep anomalous clips' audio (to listen to and for the dashboard's figures).")
]
AudioDir = Annotated[Optional[Path], typer.Option(help="Where kept audio goes (default: MONITORS/humwatch-service-audio).")]
AudioDays = Annotated[float, typer.Option(help="Kept audio older than this many days is deleted.")]
AudioMaxMb = Annotated[float, typer.Option(help="Kept audio beyond this many MB in all is deleted, oldest first.")]
Webhook = Annotated[
    Optional[str],
    typer.Option(help="URL POSTed a JSON document when an alert opens, is acknowledged or closes (retried; never holds up a clip)."),
]
WebhookSecret = Annotated[
    Optional[str],
    typer.Option(
        envvar="HUMWATCH_WEBHOOK_SECRET", help="Sign webhook bodies (X-Humwatch-Signature: sha256=HMAC); or $HUMWATCH_WEBHOOK_SECRET."
    ),
]
WebhookRetries = Annotated[
    int, typer.Option(help=ranged("Webhook retries after the first attempt.", RETRIES), callback=checked(RETRIES, "--webhook-retries"))
]
WebhookBackoff = Annotated[float, typer.Option(help="Seconds before the first webhook retry (doubling each time).")]
SmtpHost = Annotated[
    Optional[str],
    typer.Option(
        help="SMTP server for alert e-mails (with --notify-email); login from $HUMWATCH_SMTP_USER / $HUMWATCH_SMTP_PASSWORD when set."
    ),
]
SmtpPort = Annotated[int, typer.Option(help="The SMTP server's port.", callback=checked(PORT, "--smtp-port"))]
SmtpFrom = Annotated[Optional[str], typer.Option(help="The alert e-mails' From address.")]
SmtpStarttls = Annotated[bool, typer.Option("--smtp-starttls/--no-smtp-starttls", help="Upgrade the SMTP connection with STARTTLS.")]
SmtpRetries = Annotated[
    int, typer.Option(help=ranged("E-mail retries after the first attempt.", RETRIES), callback=checked(RETRIES, "--smtp-retries"))
]
SmtpBackoff = Annotated[float, typer.Option(help="Seconds before the first e-mail retry (doubling each time).")]
NotifyEmail = Annotated[Optional[str], typer.Option(help="E-mail alert events (opened, acknowledged, closed) to these addresses: a@b,c@d.")]
PublicUrl = Annotated[
    Optional[str],
    typer.Option(help="The dashboard's address as people reach it, for the links in notifications (default: http://HOST:PORT)."),
]
MaxFailedLogins = Annotated[
    int,
    typer.Option(
        help="Unknown or revoked tokens one client address may show per minute; then its requests get 429 until the minute is over (0: no limit)."
    ),
]
MaxUploadsPerMinute = Annotated[
    int, typer.Option(help="Clips one token may send per minute; more get 429 (a listener keeps them and retries; 0: no limit).")
]
AccessLog = Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request (uvicorn's access log).")]
Server = Annotated[str, typer.Option(envvar="HUMWATCH_SERVER", help="The service's URL (or $HUMWATCH_SERVER).")]
ApiToken = Annotated[
    Optional[str],
    typer.Option(
        "--token", envvar="HUMWATCH_TOKEN", help="A token with the ingest scope (better: $HUMWATCH_TOKEN, which `ps` does not show)."
    ),
]
MachineName = Annotated[
    Optional[str],
    typer.Option(
        "--machine", help="The machine's name (its monitor's folder name on the server). Watching a folder without it: DIR/<machine>/FILE."
    ),
]
Watch = Annotated[Optional[Path], typer.Option("--watch", help="Send new audio files that appear below this folder.")]
Existing = Annotated[bool, typer.Option("--existing", help="--watch: also send the files already there.")]
Mic = Annotated[bool, typer.Option("--mic", help="Record from a microphone (sounddevice / PortAudio).")]
MicDevice = Annotated[Optional[str], typer.Option(help="--mic: input device number or name (default: the system's).")]
SampleRate = Annotated[int, typer.Option(help="--mic: sample rate (Hz).")]
MicChannels = Annotated[int, typer.Option("--channels", help="--mic: channels to record.")]
ClipSeconds = Annotated[
    float,
    typer.Option(
        "--seconds",
        help=ranged("Clip length: the microphone's clips, and longer files are cut into clips this long.", WINDOW_SECONDS),
        callback=checked(WINDOW_SECONDS, "--seconds"),
    ),
]
Spool = Annotated[
    Optional[Path], typer.Option(help="Where clips wait until the service has them (default: ~/.local/state/humwatch/spool).")
]
Heartbeat = Annotated[
    float,
    typer.Option(
        min=0,
        max=3600,
        help="Seconds between heartbeats to the service while there is nothing to send (0: none): a quiet machine is not stale.",
    ),
]
TokenName = Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")]
TokenOut = Annotated[
    Optional[Path], typer.Option("--out", help="Write the token to this file, readable by you only (0600), instead of printing it.")
]
Scopes = Annotated[
    str, typer.Option("--scope", help="Comma-separated scopes: ingest (send clips), read (look, acknowledge alerts), admin (everything).")
]
