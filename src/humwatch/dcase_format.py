"""A run's results in the DCASE Task 2 conventions (``humwatch run --format dcase``), in ``RUN/dcase/``:

* ``anomaly_score_<machine>_section_<XX>_test.csv``: ``file name,score`` per test clip, no header
  (the file name alone, as the challenge's submissions have it);
* ``decision_result_<machine>_section_<XX>_test.csv``: ``file name,0|1`` (1 = anomalous). The
  decision threshold is the DCASE 2021-2024 baselines': the 0.9 quantile of a gamma distribution
  fitted to the scores of the section's normal training clips;
* ``result.csv``: what the DCASE 2022-2024 evaluator (nttcslab/dcase2023_task2_evaluator) writes
  for these files, with its columns, rows and definitions (:mod:`humwatch.dcase_eval`): per
  machine type a row per section with AUC (all), AUC (source) and AUC (target) (a domain's normal
  clips against all the section's anomalous clips), pAUC over the section, precision, recall
  and F1 score per domain; the arithmetic and harmonic mean rows; and at the end the same over
  every machine type, the ``official score`` and its jackknife ``official score ci95``.

The files are only what the evaluator expects when the test clips are the dataset's own test set:
a DCASE tree runs on its own train/test split unless ``--study-split`` is given.

Sections: ``section_00`` (DCASE 2021+) and ``id_00`` (MIMII, DCASE 2020) both become ``00``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from humwatch.data.clips import Clip
from humwatch.dcase_eval import Section, result_rows
from humwatch.io import write_csv, write_text
from humwatch.metrics import threshold_from_scores

DECISION_QUANTILE = 0.9
"""The baselines' decision threshold: this quantile of a gamma fitted to normal training scores."""


def section(machine_id: str) -> str:
    """``section_03`` / ``id_03`` -> ``03``."""
    return machine_id.split("_", 1)[1] if "_" in machine_id else machine_id


def decision_threshold(train_scores: Sequence[float]) -> float:
    s = np.asarray([v for v in train_scores if np.isfinite(v)], dtype=np.float64)
    if s.size >= 5 and s.max() > s.min():
        return threshold_from_scores(s, false_alarm_rate=1 - DECISION_QUANTILE, method="gamma")
    return float(np.quantile(s, DECISION_QUANTILE)) if s.size else float("inf")


def official_test_note(clips: Sequence[Clip], scored: Sequence[Clip]) -> str:
    """A warning when the scored clips are not the DCASE folders' test set (``""`` when they are):
    the evaluator expects every clip of a section's ``test`` folder and no other. Judged by each
    clip's folder (``train``, ``test``, ``source_test``, ``target_test``), so it holds whichever split
    the run used (the study's, a saved one)."""
    from humwatch.data.dcase import SPLIT_DIRS

    official = {c.key for c in clips if SPLIT_DIRS.get(Path(c.path).parent.name) == "test"}
    if not official:
        return ""
    got = {c.key for c in scored}
    missing, extra = len(official - got), len(got - official)
    if not missing and not extra:
        return ""
    return (
        f"the DCASE files hold {len(official & got)} of the {len(official)} clips of the dataset's test folders"
        + (f" and {extra} training clip(s)" if extra else "")
        + "; the DCASE evaluator expects every test clip of a section and no other"
        + " (a DCASE tree keeps its own split unless --study-split; unreadable clips are left out)"
    )


def write_dcase(
    folder: str | Path, test: Sequence[Clip], scores: dict[str, float], train_scores: dict[tuple[str, str], list[float]]
) -> Path:
    """Write the DCASE files for the scored ``test`` clips into ``folder`` (``train_scores``:
    ``{(machine_type, machine_id): normal training scores}``); returns ``result.csv``'s path."""
    folder = Path(folder)
    groups: dict[tuple[str, str], list[Clip]] = {}
    for c in test:
        if c.key in scores:
            groups.setdefault((c.machine_type, c.machine_id), []).append(c)
    sections = []
    for (mt, mid), clips in sorted(groups.items()):
        clips = sorted(clips, key=lambda c: Path(c.path).name)  # the evaluator reads the files sorted by name
        sec = section(mid)
        s = np.array([scores[c.key] for c in clips], dtype=np.float64)
        d = (s > decision_threshold(train_scores.get((mt, mid), []))).astype(int)
        names = [Path(c.path).name for c in clips]
        write_csv(folder / f"anomaly_score_{mt}_section_{sec}_test.csv", (), ([n, f"{v:.8g}"] for n, v in zip(names, s)))
        write_csv(folder / f"decision_result_{mt}_section_{sec}_test.csv", (), ([n, int(v)] for n, v in zip(names, d)))
        # the values as written (8 digits), so that result.csv is what the evaluator makes of the files
        written = np.array([float(f"{v:.8g}") for v in s])
        sections.append(Section(mt, sec, [c.label for c in clips], written, d, [c.domain for c in clips]))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(result_rows(sections))
    write_text(folder / "result.csv", out.getvalue())
    return folder / "result.csv"
