"""The numbers of the DCASE 2022-2024 Task 2 evaluator (nttcslab/dcase2023_task2_evaluator), as
``RUN/dcase/result.csv`` holds them (:mod:`humwatch.dcase_format` writes the files).

Per section (one machine type's ``section_XX``), from its test clips' labels, scores, domains and
0/1 decisions:

* ``AUC (all)``: the ROC AUC over every clip of the section;
* ``AUC (source)`` / ``AUC (target)``: the normal clips **of that domain** against **every**
  anomalous clip of the section (both domains), as the evaluator and the task's definition have it;
* ``pAUC``: over every clip of the section (both domains), ``roc_auc_score(..., max_fpr=0.1)``,
  which is McClish-standardised (0.5 random, 1 perfect), the value the evaluator prints (and
  :func:`humwatch.metrics.pauc`'s default, so results.json agrees);
* ``precision`` / ``recall`` / ``F1 score`` per domain: from the decisions of that domain's clips
  (normal and anomalous), ``tp / max(tp + fp, eps)``, ``tp / max(tp + fn, eps)`` and
  ``2 p r / max(p + r, eps)``, ``eps`` the float epsilon (so an empty denominator gives 0).

Per machine type, after its sections, the evaluator's four mean rows over the columns ``AUC, pAUC,
precision, recall, F1 score``; each is taken over the sections' source values followed by their
target values (for pAUC, the section's pAUC counts once for each domain): ``arithmetic mean``,
``harmonic mean`` (:func:`scipy.stats.hmean` of the values raised to at least ``eps``), and the
harmonic means of the source half and of the target half. The same four rows follow over every
machine type, section and domain; then ``official score``, the harmonic mean of every section's
AUC (source), AUC (target) and pAUC over all machine types, and ``official score ci95``, the mean
of two jackknife half-widths (:func:`jackknife_ci95`) over all test clips pooled, of the AUC and of
the pAUC. ``AUC (all)`` is in no mean, as in the evaluator.

Without domains (DCASE 2020, MIMII, a folder) the evaluator does not apply; the same definitions are
used with the per-domain columns folded into one: ``AUC``, ``pAUC``, ``precision``, ``recall``,
``F1 score``; two mean rows (arithmetic, harmonic); the official score is the harmonic mean of the
sections' AUC and pAUC. A value that is undefined (a section or domain without both classes) is
``nan`` and so is every mean over it: the evaluator would stop there, a mean that left it out would
be over other sections than it says.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

from humwatch.errors import ConfigError

MAX_FPR = 0.1
EPS = sys.float_info.epsilon
DOMAINS = ("source", "target")
COLUMNS = (
    "AUC (all)",
    "AUC (source)",
    "AUC (target)",
    "pAUC",
    "precision (source)",
    "precision (target)",
    "recall (source)",
    "recall (target)",
    "F1 score (source)",
    "F1 score (target)",
)
"""The evaluator's section columns (after ``section``)."""
PLAIN_COLUMNS = ("AUC", "pAUC", "precision", "recall", "F1 score")
"""The section columns without domains."""
MEAN_COLUMNS = ("AUC", "pAUC", "precision", "recall", "F1 score")
"""The columns of the mean rows (after the row's name and an empty cell, as the evaluator writes them)."""
OVER_ALL = "over all machine types, sections, and domains"


@dataclass
class Section:
    """One section's test clips: ``labels`` (1 anomalous), ``scores``, ``decisions`` (0/1) and
    ``domains`` (``source``/``target``, or ``""`` each when the data has none)."""

    machine_type: str
    section: str
    labels: Sequence[int]
    scores: Sequence[float]
    decisions: Sequence[int]
    domains: Sequence[str] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        y = np.asarray(self.labels, dtype=np.int64).ravel()
        s = np.asarray(self.scores, dtype=np.float64).ravel()
        d = np.asarray(self.decisions, dtype=np.int64).ravel()
        dom = np.asarray(list(self.domains) or [""] * y.size, dtype=object)
        where = f"{self.machine_type} section {self.section}"
        if not (y.size == s.size == d.size == dom.size):
            raise ConfigError(f"{where}: {y.size} labels, {s.size} scores, {d.size} decisions and {dom.size} domains")
        if not (np.isin(y, (0, 1)).all() and np.isin(d, (0, 1)).all()):
            raise ConfigError(f"{where}: labels and decisions must be 0 or 1")
        if not np.isfinite(s).all():
            raise ConfigError(f"{where}: {int((~np.isfinite(s)).sum())} scores are NaN or infinite")
        return y, s, d, dom


def roc_areas(labels, scores, max_fpr: float = MAX_FPR) -> tuple[float, float]:
    """``(AUC, pAUC)`` as :func:`sklearn.metrics.roc_auc_score` computes them (without and with
    ``max_fpr``; the pAUC McClish-standardised); NaN both when a class is missing.

    Written out rather than called because :func:`jackknife_ci95` needs it once per clip left out:
    sorting once and deleting one clip from the sorted arrays makes each call linear instead of a
    fresh sort and sklearn's input checks (4,200 clips: under a second instead of minutes). The
    same steps as sklearn (ROC points at each distinct score, trapezoids, the TPR interpolated
    at ``max_fpr``); tests check it against sklearn."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(s, kind="mergesort")[::-1]
    return _areas_sorted(y[order], s[order], max_fpr)


def _areas_sorted(y: np.ndarray, s: np.ndarray, max_fpr: float) -> tuple[float, float]:
    """:func:`roc_areas` of clips already sorted by score, highest first."""
    n1 = int(y.sum())
    if n1 == 0 or n1 == y.size:
        return float("nan"), float("nan")
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # the last clip of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    full = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    t_cut = float(np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1]))
    x, t = np.r_[fpr[:stop], max_fpr], np.r_[tpr[:stop], t_cut]
    part = float(np.sum(np.diff(x) * (t[1:] + t[:-1]) / 2.0))
    lo, hi = 0.5 * max_fpr**2, max_fpr
    return full, 0.5 * (1.0 + (part - lo) / (hi - lo))


def _sklearn_areas(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """``(AUC, pAUC)`` from :func:`sklearn.metrics.roc_auc_score`, the evaluator's own calls, so that
    result.csv's section values agree with it to the last digit; NaN when a class is missing."""
    from sklearn.metrics import roc_auc_score

    if not 0 < int(y.sum()) < y.size:
        return float("nan"), float("nan")
    return float(roc_auc_score(y, s)), float(roc_auc_score(y, s, max_fpr=MAX_FPR))


def _jackknife_half_width(estimates: np.ndarray) -> float:
    """The evaluator's ci95 from the leave-one-out estimates: ``t * sqrt(sum((e_i - mean)^2) / (N (N - 1)))``
    with ``t`` Student's two-sided 95 % quantile for ``N - 1`` degrees of freedom. (This is its formula,
    kept as it is: the textbook jackknife standard error is ``N - 1`` times larger.)"""
    n = estimates.size
    if n < 2 or not np.isfinite(estimates).all():
        return float("nan")
    sigma = float(np.sqrt(np.sum((estimates - estimates.mean()) ** 2) / (n * (n - 1))))
    return float(abs(stats.t.ppf(0.025, n - 1)) * sigma)


def jackknife_ci95(labels, scores, max_fpr: float = MAX_FPR) -> tuple[float, float]:
    """``(AUC ci95, pAUC ci95)``: the evaluator's jackknife half-widths over these clips (it pools
    every test clip of every machine type and section), each clip left out once; NaN when leaving
    a clip out leaves one class only (the evaluator stops there)."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(s, kind="mergesort")[::-1]
    y, s = y[order], s[order]
    loo = np.array([_areas_sorted(np.delete(y, i), np.delete(s, i), max_fpr) for i in range(y.size)]).reshape(-1, 2)
    return _jackknife_half_width(loo[:, 0]), _jackknife_half_width(loo[:, 1])


def _prf(y: np.ndarray, d: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum((d == 1) & (y == 1)))
    fp = float(np.sum((d == 1) & (y == 0)))
    fn = float(np.sum((d == 0) & (y == 1)))
    p = tp / max(tp + fp, EPS)
    r = tp / max(tp + fn, EPS)
    return p, r, 2.0 * p * r / max(p + r, EPS)


def section_values(sec: Section, with_domains: bool) -> dict[str, float]:
    """The section's row: :data:`COLUMNS` with domains, else :data:`PLAIN_COLUMNS`."""
    y, s, d, dom = sec.arrays()
    auc_all, pauc = _sklearn_areas(y, s)
    if not with_domains:
        return dict(zip(PLAIN_COLUMNS, (auc_all, pauc, *_prf(y, d))))
    row = {"AUC (all)": auc_all, "pAUC": pauc}
    for name in DOMAINS:
        own = dom == name
        row[f"AUC ({name})"] = _sklearn_areas(y[own | (y == 1)], s[own | (y == 1)])[0]
        p, r, f = _prf(y[own], d[own])
        row[f"precision ({name})"], row[f"recall ({name})"], row[f"F1 score ({name})"] = p, r, f
    return {c: row[c] for c in COLUMNS}


def _hmean(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        return float("nan")
    return float(stats.hmean(np.maximum(v, EPS)))


def _mean(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.mean(v)) if v.size else float("nan")


def _performance(rows: list[dict], with_domains: bool) -> np.ndarray:
    """The evaluator's matrix: one line per :data:`MEAN_COLUMNS` entry, the sections' source values
    then their target values (without domains: the sections' values)."""
    if not with_domains:
        return np.array([[r[c] for r in rows] for c in PLAIN_COLUMNS], dtype=np.float64).reshape(len(PLAIN_COLUMNS), -1)
    keys = (
        ("AUC (source)", "AUC (target)"),
        ("pAUC", "pAUC"),
        ("precision (source)", "precision (target)"),
        ("recall (source)", "recall (target)"),
        ("F1 score (source)", "F1 score (target)"),
    )
    return np.array([[r[a] for r in rows] + [r[b] for r in rows] for a, b in keys], dtype=np.float64).reshape(5, -1)


def mean_rows(rows: list[dict], with_domains: bool, suffix: str = "") -> list[tuple[str, list[float]]]:
    """The mean rows under :data:`MEAN_COLUMNS`: ``(name, values)``; ``suffix`` follows each name
    (the evaluator's ``over all machine types, sections, and domains`` for the closing rows)."""
    perf = _performance(rows, with_domains)
    tail = f" {suffix}" if suffix else ""
    out = [(f"arithmetic mean{tail}", [_mean(v) for v in perf]), (f"harmonic mean{tail}", [_hmean(v) for v in perf])]
    if with_domains:
        half = perf.shape[1] // 2
        out += [
            (f"source harmonic mean{tail}", [_hmean(v) for v in perf[:, :half]]),
            (f"target harmonic mean{tail}", [_hmean(v) for v in perf[:, half:]]),
        ]
    return out


def official_score(rows: list[dict], with_domains: bool) -> float:
    """The harmonic mean of every section's AUC (source), AUC (target) and pAUC (without domains:
    AUC and pAUC), over all machine types."""
    keys = ("AUC (source)", "AUC (target)", "pAUC") if with_domains else ("AUC", "pAUC")
    return _hmean(np.array([r[k] for k in keys for r in rows], dtype=np.float64))


def has_domains(sections: Sequence[Section]) -> bool:
    """Whether every clip of every section carries a source/target domain (the evaluator's layout)."""
    return bool(sections) and all(list(s.domains) and all(d in DOMAINS for d in s.domains) for s in sections)


def _cell(v: float) -> str:
    """The evaluator writes Python's shortest round-trip text of each float (``str``)."""
    return str(float(v))


def result_rows(sections: Sequence[Section]) -> list[list[str]]:
    """``result.csv``'s rows (lists of cells), in the evaluator's layout: per machine type its name,
    the column header, a row per section, the mean rows under their own header and an empty row;
    then the mean rows over all, an empty row, ``official score`` and ``official score ci95``."""
    if not sections:
        raise ConfigError("result.csv: no scored sections")
    dom = has_domains(sections)
    columns = COLUMNS if dom else PLAIN_COLUMNS
    mean_head = ["", "", *MEAN_COLUMNS]
    out: list[list[str]] = []
    every: list[dict] = []
    for mtype in sorted({s.machine_type for s in sections}):
        mine = sorted((s for s in sections if s.machine_type == mtype), key=lambda s: s.section)
        rows = [section_values(s, dom) for s in mine]
        every += rows
        out += [[mtype], ["section", *columns]]
        out += [[s.section, *(_cell(r[c]) for c in columns)] for s, r in zip(mine, rows)]
        out.append(mean_head)
        out += [[name, "", *map(_cell, values)] for name, values in mean_rows(rows, dom)]
        out.append([])
    out.append(mean_head)
    out += [[name, "", *map(_cell, values)] for name, values in mean_rows(every, dom, OVER_ALL)]
    out.append([])
    y = np.concatenate([s.arrays()[0] for s in sections])
    s_all = np.concatenate([s.arrays()[1] for s in sections])
    out.append(["official score", "", _cell(official_score(every, dom))])
    out.append(["official score ci95", "", _cell(float(np.mean(jackknife_ci95(y, s_all))))])
    out.append([])
    return out
