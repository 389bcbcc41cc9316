"""`humwatch run`: one method over one dataset, from files to the results table.

    files -> clips (layout parser) -> the study's split -> per machine type (or per id): the method
    fits on the training clips and scores the test clips -> AUC/pAUC per machine type and id

A method is any entry of :mod:`humwatch.methods` (``autoencoder``, ``embed-detect``, ``finetune``, ...);
unsupervised methods learn from the normal training clips only (the study drops the anomalies of
train and validation), supervised ones from both labels. Every setting is checked before any audio
is read. The run directory (:class:`~humwatch.rundir.RunDir`) gets ``config.json``, ``split.csv``,
``scores.csv``, ``results.json`` and ``results.md``, and the embeddings and fitted models.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from humwatch.audio import AudioSettings
from humwatch.data.clips import Clip, read_clips_csv
from humwatch.errors import ConfigError, DatasetError
from humwatch.rundir import RunDir
from humwatch.settings import CHANNEL, SEED, Optional, check_value


@dataclass
class RunConfig:
    """Everything that decides a run's numbers (saved as the run's config.json): the data, the
    split, how clips are read, and the method with its own ``settings`` (a mapping of the method's
    Settings fields, e.g. ``{"backbone": "ast", "detector": "knn"}``; defaults for the rest)."""

    data: str | None
    method: str = "autoencoder"
    settings: dict = field(default_factory=dict)
    layout: str = "auto"
    machines: list[str] | None = None
    ids: list[str] | None = None
    snr: str | None = None
    per_id: bool = False
    seed: int = 0
    test_fraction: float = 0.25
    val_fraction: float = 0.1
    split_csv: str | None = None
    dataset_split: bool | None = None
    """Keep the dataset's own train/test split (DCASE's folders, a manifest's split column) instead
    of the study's (``test_fraction`` / ``val_fraction`` of every stratum). ``None``: the dataset's
    own on a DCASE tree (its test set is what the challenge scores), the study's otherwise;
    :func:`prepare_clips` writes down which."""
    dataset_val_fraction: float = 0.0
    """With the dataset's own split: this share of each training stratum becomes validation clips
    (default none: every training clip trains; a method that needs held-out clips says so in its
    training report)."""
    channel: int | None = None
    skip_bad: bool = False
    cache_dir: str | None = None
    save_models: bool = False
    """Save every group's fitted method under RUN/models/<group> (the autoencoder's always are: they are small)."""
    dcase_output: bool = False
    """Also write the DCASE Task 2 files (scores, decisions, result.csv) into RUN/dcase (:mod:`humwatch.dcase_format`)."""
    device: str = "cpu"

    def validate(self):
        """Check everything that can be checked without reading audio or building a model; returns
        the method's checked Settings (and stores their full form in ``settings``)."""
        from humwatch.data.split import fraction
        from humwatch.methods import method_settings

        check_value(self.channel, Optional(CHANNEL), "channel")
        if not self.data and not self.split_csv:
            raise ConfigError("give --data (a dataset) or --split (a saved split.csv)")
        check_value(self.seed, SEED, "seed")
        if self.dataset_split is not None and not isinstance(self.dataset_split, bool):
            raise ConfigError(f"dataset_split must be true, false or null, got {self.dataset_split!r}")
        fraction(self.dataset_val_fraction, "dataset-val")
        s = method_settings(self.method, self.settings)
        self.settings = s.to_dict()  # every setting, checked, saved in config.json
        return s

    @property
    def audio(self) -> AudioSettings:
        return AudioSettings(channel=self.channel)


@dataclass
class RunResult:
    rows: list[dict]
    scores: dict[str, float]
    clips: list[Clip]
    skipped: list[tuple[str, str]]
    info: dict


def uses_dataset_split(cfg: RunConfig) -> bool:
    """Whether ``cfg`` runs on the dataset's own train/test split: as asked, else (``None``) when
    its data is a DCASE tree (by names only, :func:`humwatch.data.loading.detect_layout`)."""
    if cfg.dataset_split is not None:
        return bool(cfg.dataset_split)
    if cfg.split_csv or not cfg.data:
        return False
    from humwatch.data.loading import detect_layout

    layout = cfg.layout.lower() if isinstance(cfg.layout, str) else "auto"
    return (detect_layout(cfg.data) if layout == "auto" else layout) == "dcase"


def prepare_clips(cfg: RunConfig) -> list[Clip]:
    """The dataset's clips with their split: the study's (``test_fraction``/``val_fraction`` per
    stratum), the dataset's own (:func:`uses_dataset_split`; the default on a DCASE tree, every
    training clip trains unless ``dataset_val_fraction``), or a saved one, to repeat a run exactly.
    Sets ``cfg.dataset_split`` to the split used (config.json records it)."""
    from humwatch.data import load_dataset
    from humwatch.data.split import study_split

    if cfg.split_csv:
        return check_split(read_clips_csv(cfg.split_csv), cfg.split_csv, cfg.data)
    cfg.dataset_split = uses_dataset_split(cfg)
    clips = load_dataset(cfg.data, layout=cfg.layout, machines=cfg.machines, ids=cfg.ids, snr=cfg.snr, keep_split=cfg.dataset_split)
    if not cfg.dataset_split:
        return study_split(clips, seed=cfg.seed, test=cfg.test_fraction, val=cfg.val_fraction)
    test = [c for c in clips if c.split == "test"]
    if not test or not any(c.split == "train" for c in clips):
        what = "test" if not test else "training"
        raise DatasetError(
            f"{cfg.data}: its own train/test split has no {what} clips (a DCASE tree's train/ and test/ "
            "folders or a manifest's split column give them); use the study's split (--study-split)"
        )
    train = [c for c in clips if c.split != "test"]
    if cfg.dataset_val_fraction:
        train = study_split(train, seed=cfg.seed, test=0.0, val=cfg.dataset_val_fraction)
    else:
        train = [c if c.split in ("train", "val") else c.with_split("train") for c in train]  # a manifest's val stays
    return sorted(train + test, key=lambda c: c.path)


def split_description(cfg: RunConfig, clips: Sequence[Clip]) -> str:
    """One line on the split a run used (results.md and the run command show it)."""
    if cfg.split_csv:
        return f"the saved split {cfg.split_csv}"
    if cfg.dataset_split:
        n = {s: sum(c.split == s for c in clips) for s in ("train", "val", "test")}
        held = f", {n['val']} of them held out for validation" if n["val"] else ", none held out"
        return f"the dataset's own: {n['train'] + n['val']} training clips{held}; {n['test']} test clips"
    return f"the study's: {cfg.test_fraction:g} of each machine, id and label to test, {cfg.val_fraction:g} of the rest to validation (seed {cfg.seed})"


def check_split(clips: list[Clip], where: str, data: str | None) -> list[Clip]:
    """A saved split that cannot leak: every clip has a split and appears once (a clip in train and
    test would be scored by a model that learnt it), and with ``data`` every clip lies under it."""
    if not all(c.split for c in clips):
        raise DatasetError(f"{where}: some clips have no split")
    seen: dict[str, str] = {}
    for c in clips:
        if c.key in seen:
            where_too = f"{seen[c.key]} and {c.split}" if seen[c.key] != c.split else f"{c.split} twice"
            raise DatasetError(f"{where}: {c.key} is listed in {where_too}; a split must list every clip once")
        seen[c.key] = c.split
    if data:
        root = Path(data).expanduser().resolve()
        outside = [c.path for c in clips if not Path(c.path).resolve().is_relative_to(root)]
        if outside:
            raise DatasetError(
                f"{where}: {len(outside)} clip(s) lie outside --data {data} (e.g. {outside[0]}); give --split alone, or the --data it was made from"
            )
    return clips


def training_groups(clips: Sequence[Clip], per_id: bool) -> dict[str, list[Clip]]:
    """Clips of each model to train: one per machine type (all ids, as the study) or one per id."""
    groups: dict[str, list[Clip]] = {}
    for c in clips:
        groups.setdefault(c.group if per_id else c.machine_type, []).append(c)
    return dict(sorted(groups.items()))


def run(cfg: RunConfig, out: str | Path, progress: bool = True, overwrite: bool = False, engine=None) -> RunResult:
    """Run ``cfg`` and write the run directory ``out``: into a hidden folder beside it that takes its
    place when the run is complete (:func:`humwatch.io.staged_folder`), so ``out`` is never half
    written nor half old and half new. An ``out`` that holds files is refused unless ``overwrite``.
    ``engine`` (:mod:`humwatch.engine`, default local) is where the per-clip work runs: the results
    are the same whichever it is."""
    from humwatch.io import check_holds_none, check_out_folder, staged_folder

    settings = cfg.validate()
    out = Path(out)
    check_out_folder(out, overwrite, kind="run", inputs=[cfg.data, cfg.split_csv])
    t0 = time.time()
    clips = prepare_clips(cfg)
    check_holds_none(out, (c.path for c in clips))
    with staged_folder(out, kind="run") as staging:
        return _run(cfg, settings, clips, RunDir(staging), progress, t0, engine)


def _run(cfg: RunConfig, settings, clips: list[Clip], rd: RunDir, progress: bool, t0: float, engine=None) -> RunResult:
    from humwatch.embed import EmbeddingSet
    from humwatch.methods import Context, create_method
    from humwatch.runinfo import environment
    from humwatch.runtime import Runtime

    rd.write_split(clips)
    # one runtime for the whole run: one skip count, and the embeddings kept for the run's t-SNE
    rt = Runtime(
        on_bad="skip" if cfg.skip_bad else "error",
        progress=progress,
        cache_dir=cfg.cache_dir,
        keep_embeddings=True,
        **({"engine": engine} if engine is not None else {}),
    )
    ctx = Context(audio=cfg.audio, seed=cfg.seed, device=cfg.device, run_clips=[c for c in clips if c.split in ("train", "val")])
    readings: dict[str, dict[str, float]] = {}
    embeddings: dict[str, list] = {}
    info: dict = {}
    groups: dict[str, dict] = {}
    label = cfg.method
    train_scores: dict[tuple[str, str], list[float]] = {}
    for name, group in training_groups(clips, cfg.per_id).items():
        method = create_method(cfg.method, settings, ctx, title=name)
        method.fit([c for c in group if c.split == "train"], val=[c for c in group if c.split == "val"], runtime=rt)
        test = [c for c in group if c.split == "test"]
        for key, values in method.readings(test, runtime=rt).items():
            readings.setdefault(key, {}).update({c.path: float(v) for c, v in zip(test, values) if np.isfinite(v)})
        for bname, emb in method.embeddings().items():
            embeddings.setdefault(bname, []).append(emb)
        if cfg.dcase_output:  # the DCASE baselines' decision threshold comes from normal training scores
            normal = [c for c in group if c.split == "train" and not c.is_anomalous]
            for c, v in zip(normal, method.score(normal, runtime=rt)):
                train_scores.setdefault((c.machine_type, c.machine_id), []).append(float(v))
        if cfg.save_models or method.keeps_models:
            method.save(rd.model_dir(name))
        minfo = method.info()
        groups[name] = {"n_train": method.n_train_, **({"training": minfo.pop("training")} if "training" in minfo else {})}
        info = {**minfo, **info}
        label = method.label
    for bname, sets in embeddings.items():
        rd.write_embeddings(bname, EmbeddingSet.concat(sets))
    scores = readings.get("score", {})
    scored = [c for c in clips if c.path in scores]
    if not scored:
        raise DatasetError(f"{cfg.data}: no test clips could be scored")
    rows = result_rows(scored, readings, cfg.per_id)
    rd.write_scores(scored, readings)
    notes = []
    if cfg.dcase_output:
        from humwatch.dcase_format import official_test_note, write_dcase

        write_dcase(rd.path / "dcase", scored, {c.key: scores[c.path] for c in scored}, train_scores)
        note = official_test_note(clips, scored)
        if note:
            notes.append(note)
    env = environment()
    info = {
        "method": cfg.method,
        "label": label,
        **info,
        "split": split_description(cfg, clips),
        **({"notes": notes} if notes else {}),
        "settings": cfg.settings,
        "groups": groups,
        "n_clips": len(clips),
        "n_scored": len(scored),
        "skipped": [{"file": p, "reason": r} for p, r in rt.skipped],
        "seconds": round(time.time() - t0, 2),
        "engine": rt.engine.describe(),
        **env,
    }
    rd.write_results(asdict(cfg), env, info, rows, results_markdown(info, rows))
    return RunResult(rows, scores, clips, rt.skipped, info)


def result_rows(scored: Sequence[Clip], readings: dict[str, dict[str, float]], per_id: bool) -> list[dict]:
    """AUC/pAUC rows of the main score, with ``auc_<reading>`` / ``pauc_<reading>`` for every other reading."""
    from humwatch.metrics import add_domain_columns, group_table

    # one model per id: its scores are not on a common scale, so the type's row is the mean of the ids'
    summary = "mean" if per_id else "pooled"
    main = np.array([readings["score"][c.path] for c in scored])
    rows = add_domain_columns(group_table(scored, main, type_summary=summary), scored, main)
    for key, values in readings.items():
        if key == "score":
            continue
        other = group_table(scored, np.array([values[c.path] for c in scored]), type_summary=summary)
        for r, o in zip(rows, other):
            r[f"auc_{key}"], r[f"pauc_{key}"] = o["auc"], o["pauc"]
    return rows


def results_markdown(info: dict, rows: list[dict]) -> str:
    from humwatch.metrics import TABLE_COLUMNS, few_clips_warnings, markdown_table
    from humwatch.models.weights import random_init_warning

    lines = [f"# humwatch run: {info['label']}", ""]
    if info.get("random_init"):
        lines += [f"**{random_init_warning()}**", ""]
    lines += [f"- weights: {info.get('weights')}", f"- clips scored: {info['n_scored']} of {info['n_clips']}"]
    if info.get("split"):
        lines.append(f"- split: {info['split']}")
    lines += [f"- note: {n}" for n in info.get("notes", ())]
    if info["skipped"]:
        lines.append(f"- skipped bad files: {len(info['skipped'])}")
    extra = [k for k in (rows[0] if rows else {}) if k.startswith(("auc_", "pauc_")) and k != "auc_ci"]
    lines += [
        "",
        "AUC: the chance that an anomalous test clip scores above a normal one (0.5 is chance; auc_ci its "
        "95 % bootstrap interval); pAUC: the same over false-positive rates up to 0.1, as the DCASE evaluator "
        "prints it (McClish-standardised, 0.5 is chance). Scores: higher = more anomalous.",
        "",
    ]
    lines += [markdown_table(rows, [*TABLE_COLUMNS[:5], *extra, *TABLE_COLUMNS[5:]]), ""]
    warnings = few_clips_warnings(rows)
    if warnings:
        lines += ["Few clips:", "", *(f"- {w}" for w in warnings), ""]
    return "\n".join(lines)
