"""A run's results in the DCASE Task 2 conventions (``humwatch run --format dcase``), in ``RUN/dcase/``:

* ``anomaly_score_<machine>_section_<XX>_test.csv``: ``file name,score`` per test clip, no header
  (the file name alone, as the challenge's submissions have it);
* ``decision_result_<machine>_section_<XX>_test.csv``: ``file name,0|1`` (1 = anomalous). The
  decision threshold is the DCASE 2021-2024 baselines': the 0.9 quantile of a gamma distribution
  fitted to the scores of the section's normal training clips;
* ``result.csv``: per machine type a block with one row per section: AUC (and AUC (source) /
  AUC (target) where the data has domains), pAUC (over all the section's clips, as the challenge
  computes it, McClish-standardised as its evaluator prints it), precision, recall and F1 of the
  decisions; then the section's arithmetic and harmonic means; and at the end the ``official
  score``, the harmonic mean over every machine type and section of all the AUC and pAUC values.

Sections: ``section_00`` (DCASE 2021+) and ``id_00`` (MIMII, DCASE 2020) both become ``00``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from humwatch.data.clips import Clip
from humwatch.io import write_csv, write_text
from humwatch.metrics import auc, pauc, threshold_from_scores

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


def _prf(y: np.ndarray, d: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum((d == 1) & (y == 1)))
    p = tp / max(float(d.sum()), 1e-12) if d.sum() else 0.0
    r = tp / max(float(y.sum()), 1e-12) if y.sum() else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def write_dcase(folder: str | Path, test: Sequence[Clip], scores: dict[str, float],
                train_scores: dict[tuple[str, str], list[float]]) -> Path:
    """Write the DCASE files for the scored ``test`` clips into ``folder`` (``train_scores``:
    ``{(machine_type, machine_id): normal training scores}``); returns ``result.csv``'s path."""
    folder = Path(folder)
    groups: dict[tuple[str, str], list[Clip]] = {}
    for c in test:
        if c.key in scores:
            groups.setdefault((c.machine_type, c.machine_id), []).append(c)
    has_domains = any(c.domain for c in test)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    official: list[float] = []
    for mtype in sorted({k[0] for k in groups}):
        head = ["section", "AUC (source)", "AUC (target)"] if has_domains else ["section", "AUC"]
        head += ["pAUC", "precision", "recall", "F1 score"]
        w.writerow([mtype])
        w.writerow(head)
        rows = []
        for (mt, mid) in sorted(k for k in groups if k[0] == mtype):
            clips = sorted(groups[(mt, mid)], key=lambda c: Path(c.path).name)
            sec = section(mid)
            y = np.array([c.label for c in clips])
            s = np.array([scores[c.key] for c in clips])
            thr = decision_threshold(train_scores.get((mt, mid), []))
            d = (s > thr).astype(int)
            names = [Path(c.path).name for c in clips]
            write_csv(folder / f"anomaly_score_{mt}_section_{sec}_test.csv", (), ([n, f"{v:.8g}"] for n, v in zip(names, s)))
            write_csv(folder / f"decision_result_{mt}_section_{sec}_test.csv", (), ([n, int(v)] for n, v in zip(names, d)))
            if has_domains:
                aucs = []
                for dom in ("source", "target"):
                    keep = np.array([c.domain == dom for c in clips])
                    aucs.append(auc(y[keep], s[keep]) if keep.any() else float("nan"))
            else:
                aucs = [auc(y, s)]
            row = [*aucs, pauc(y, s), *_prf(y, d)]
            rows.append(row)
            official += [v for v in (*aucs, row[len(aucs)]) if np.isfinite(v)]
            w.writerow([sec, *(f"{v:.6f}" for v in row)])
        arr = np.array(rows, dtype=np.float64)
        w.writerow(["arithmetic mean", *(f"{v:.6f}" for v in np.nanmean(arr, axis=0))])
        w.writerow(["harmonic mean", *(f"{_hmean(arr[:, j]):.6f}" for j in range(arr.shape[1]))])
        w.writerow([])
    w.writerow(["", "AUC and pAUC, harmonic mean over every machine type and section"])
    w.writerow(["official score", f"{_hmean(np.array(official)):.6f}"])
    write_text(folder / "result.csv", out.getvalue())
    return folder / "result.csv"


def _hmean(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(stats.hmean(np.maximum(v, np.finfo(float).eps))) if v.size else float("nan")
