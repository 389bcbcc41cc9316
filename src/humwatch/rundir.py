"""The run directory: written by the pipeline (``humwatch run``, ``finetune``, each ``reproduce`` cell),
read by explanations, reports, ``reproduce`` and t-SNE, all through :class:`RunDir`::

    RUN/config.json    every setting (the run's and the method's), versions, machine
    RUN/split.csv      every clip with its split (``--split RUN/split.csv`` repeats the run exactly)
    RUN/scores.csv     file, machine_type, machine_id, label, split, score (+ other readings) of the test clips
    RUN/results.json   method, label, weights, counts, skipped files, rows of AUC / pAUC per machine type and id
    RUN/results.md     the same as a table
    RUN/embeddings/<backbone>.npz   the embeddings behind the scores (methods that embed clips)
    RUN/models/<group>/             the fitted method of each training group (``load_method`` reads it)

A folder is a run when it holds ``results.json`` (written last). :meth:`RunDir.find` gives the runs
at and below a folder (a ``reproduce`` directory keeps one run per cell in ``runs/<row>__<column>``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from humwatch.audio import AudioSettings
from humwatch.data.clips import Clip, read_clips_csv, write_clips_csv
from humwatch.io import damaged, read_json, write_csv, write_json, write_text

SCORE_COLUMNS = ("file", "machine_type", "machine_id", "label", "split", "score")


class RunDir:
    """One run's folder (see the module docstring)."""

    CONFIG = "config.json"
    SPLIT = "split.csv"
    SCORES = "scores.csv"
    RESULTS = "results.json"
    RESULTS_MD = "results.md"
    EMBEDDINGS = "embeddings"
    MODELS = "models"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- what is a run ---------------------------------------------------------------------------
    @classmethod
    def is_run(cls, path: str | Path) -> bool:
        return (Path(path) / cls.RESULTS).is_file()

    @classmethod
    def find(cls, root: str | Path, depth: int = 2) -> list["RunDir"]:
        """The runs at ``root`` and up to ``depth`` folder levels below it, ``root`` first."""
        root = Path(root)
        if not root.is_dir():
            return []
        found = [cls(root)] if cls.is_run(root) else []
        level = [root]
        for _ in range(depth):
            level = [c for d in level for c in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))]
            found += [cls(d) for d in level if cls.is_run(d)]
        return found

    # -- reading ---------------------------------------------------------------------------------
    def _json(self, name: str) -> dict:
        f = self.path / name
        if not f.is_file():
            return {}
        return read_json(f, dict)

    def config(self) -> dict:
        """The run's settings (``config.json``'s ``config``)."""
        return self._json(self.CONFIG).get("config", {})

    def results(self) -> dict:
        return self._json(self.RESULTS)

    @property
    def random_init(self) -> bool:
        return bool(self.results().get("random_init"))

    @property
    def audio(self) -> AudioSettings:
        ch = self.config().get("channel")
        return AudioSettings(channel=ch if isinstance(ch, int) and not isinstance(ch, bool) else None)

    def backbones(self) -> dict[str, dict]:
        """``{backbone name: {"weights", "config"}}`` of the method's backbone, if it has one."""
        cfg = self.config()
        s = cfg.get("settings") or {}
        if cfg.get("method") != "embed-detect" or not s.get("backbone"):
            return {}
        return {s["backbone"]: {"weights": s.get("weights", "default"), "config": s.get("backbone_config")}}

    def clips(self) -> list[Clip]:
        """The clips the run used (``split.csv``), else the scored ones (``scores.csv``)."""
        if (self.path / self.SPLIT).is_file():
            return read_clips_csv(self.path / self.SPLIT)
        if (self.path / self.SCORES).is_file():
            return [
                Clip(r["file"], r.get("machine_type") or "clip", r.get("machine_id", ""), int(r["label"]), split=r.get("split") or "test")
                for r in self._score_rows("label")
            ]
        return []

    def scores(self, reading: str = "score") -> dict[str, float]:
        """``{file: score}`` of the test clips (``reading``: another column, e.g. ``votes``)."""
        return {r["file"]: float(r[reading]) for r in self._score_rows(reading)}

    def _score_rows(self, column: str) -> list[dict]:
        """The rows of ``scores.csv`` (each with ``file`` and ``column``, ``label`` an integer and
        ``column`` a number); DamagedFileError (one line) when it cannot be read so."""
        f = self.path / self.SCORES
        try:
            with open(f, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            for r in rows:
                if not isinstance(r.get("file"), str):
                    raise KeyError("file")
                int(r["label"])
                float(r[column])
        except KeyError as e:
            raise damaged(f, f"a row without {e.args[0]!r}") from None
        except (OSError, UnicodeDecodeError, csv.Error, TypeError, ValueError) as e:
            raise damaged(f, e) from None
        return rows

    def embedding_files(self) -> dict[str, Path]:
        return {f.stem: f for f in sorted((self.path / self.EMBEDDINGS).glob("*.npz"))}

    def embeddings(self, name: str):
        """The :class:`~humwatch.embed.EmbeddingSet` saved for backbone ``name``."""
        from humwatch.embed import EmbeddingSet

        return EmbeddingSet.load_npz(self.path / self.EMBEDDINGS / f"{name}.npz")

    def model_dir(self, group: str) -> Path:
        return self.path / self.MODELS / group

    # -- writing (the pipeline) -------------------------------------------------------------------
    def write_split(self, clips: Sequence[Clip]) -> None:
        write_clips_csv(list(clips), self.path / self.SPLIT)

    def write_scores(self, clips: Sequence[Clip], readings: dict[str, dict[str, float]]) -> None:
        """``readings``: ``{"score": {path: value}, other: {...}}``; other readings become columns ``score_<name>``."""
        extra = [k for k in readings if k != "score"]
        write_csv(
            self.path / self.SCORES,
            [*SCORE_COLUMNS, *(f"score_{k}" for k in extra)],
            (
                [c.path, c.machine_type, c.machine_id, c.label, c.split, *(f"{readings[k][c.path]:.8g}" for k in ("score", *extra))]
                for c in clips
            ),
        )

    def write_embeddings(self, name: str, emb) -> None:
        emb.save_npz(self.path / self.EMBEDDINGS / f"{name}.npz")

    def write_results(self, config: dict, env: dict, info: dict, rows: list[dict], markdown: str) -> None:
        """``config.json``, ``results.md`` and, last, ``results.json`` (which makes the folder a run)."""
        write_json(self.path / self.CONFIG, {"config": config, **env})
        write_text(self.path / self.RESULTS_MD, markdown)
        write_json(self.path / self.RESULTS, {**info, "rows": rows})
