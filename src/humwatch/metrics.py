"""Evaluation metrics and decision thresholds for anomaly scores (higher = more anomalous).

* :func:`auc` - ROC AUC (:func:`sklearn.metrics.roc_auc_score`); NaN when a group has only one
  class, so a results table can still be written and its counts show why.
* :func:`pauc` - the partial AUC over false-positive rates ``[0, 0.1]``. By default (``kind="mcclish"``)
  the value the DCASE Task 2 evaluator prints: its scripts call ``sklearn.metrics.roc_auc_score(...,
  max_fpr=0.1)``, which applies McClish's standardisation (0.5 for a random detector, 1 for a
  perfect one). ``kind="area"`` gives the definition written in the DCASE task descriptions: the
  area under the ROC curve up to ``max_fpr`` divided by ``max_fpr`` (``max_fpr / 2`` for a random
  detector).
* :func:`auc_interval` - a 95 % bootstrap interval of the AUC (resampling normal and anomalous
  clips separately).
* :func:`group_table` - rows per machine type (``machine_id == "all"``) and per machine id.
* :func:`add_domain_columns` - DCASE 2022-2024's source and target AUCs on those rows, and
  :func:`official_score` - DCASE's harmonic mean over sections (and domains) of AUC and pAUC.
* :func:`threshold_from_scores` - a decision threshold from normal validation scores only.
* :func:`markdown_table` - a GitHub markdown table of such rows.

Wrong input (lengths that differ, labels other than 0/1, NaN scores, a rate outside (0, 1), too
few scores) raises :class:`~humwatch.errors.ConfigError` with one line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from humwatch.errors import ConfigError
from humwatch.settings import FALSE_ALARM_RATE, OneOf, Real, check_value

__all__ = [
    "GAMMA_MIN_SCORES",
    "TABLE_COLUMNS",
    "add_domain_columns",
    "auc",
    "group_table",
    "official_score",
    "markdown_table",
    "auc_interval",
    "pauc",
    "threshold_from_scores",
]

PAUC_KINDS = ("mcclish", "area")
"""``mcclish``: what the DCASE evaluator prints (``roc_auc_score(max_fpr=0.1)``); ``area``: area / max_fpr."""

FEW_CLIPS = 10
"""Fewer clips than this in a class makes an AUC coarse: results say so."""

#: Row keys of :func:`group_table`, in table order (the run directory's ``results.json`` rows).
TABLE_COLUMNS = ("machine_type", "machine_id", "auc", "auc_ci", "pauc", "n_normal", "n_anomalous")

#: Fewest normal scores :func:`threshold_from_scores` accepts for ``method="gamma"``.
GAMMA_MIN_SCORES = 5


def _labels_scores(labels: Any, scores: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ConfigError(f"{what}: {y.size} labels but {s.size} scores")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = sorted({str(v) for v in y[~np.isin(y, (0, 1))]})[:3]
        raise ConfigError(f"{what}: labels must be 0 (normal) or 1 (anomalous), got {', '.join(bad)}")
    if not np.isfinite(s).all():
        raise ConfigError(f"{what}: {int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    return y.astype(np.int64), s


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


def auc(labels: Any, scores: Any) -> float:
    """ROC AUC of anomaly ``scores`` (higher = more anomalous) against ``labels`` (1 anomalous,
    0 normal), via :func:`sklearn.metrics.roc_auc_score` (ties count one half). NaN when the
    labels hold only one class (the AUC is undefined there)."""
    y, s = _labels_scores(labels, scores, "auc")
    if not _both_classes(y):
        return float("nan")
    return float(roc_auc_score(y, s))


def pauc(labels: Any, scores: Any, max_fpr: float = 0.1, kind: str = "mcclish") -> float:
    """Partial ROC AUC over false-positive rates ``[0, max_fpr]`` (DCASE Task 2's pAUC,
    ``max_fpr=0.1``). NaN when only one class is present.

    The ROC curve comes from :func:`sklearn.metrics.roc_curve` (every threshold kept, so ties
    give diagonal segments); it is cut at ``max_fpr`` with the TPR linearly interpolated there and
    integrated with the trapezoidal rule, giving the raw area ``A``. ``kind="mcclish"`` (default)
    returns McClish's ``0.5 * (1 + (A - min) / (max - min))`` with ``min = max_fpr**2 / 2`` and
    ``max = max_fpr``: exactly ``sklearn.metrics.roc_auc_score(..., max_fpr=...)``, the number the
    DCASE evaluator prints (0.5 random, 1 perfect). ``kind="area"`` returns ``A / max_fpr`` (the
    task descriptions' definition: ``max_fpr / 2`` random, 1 perfect)."""
    max_fpr = check_value(max_fpr, Real(0.0, 1.0, open_low=True, text=False), "max_fpr", "pauc")
    check_value(kind, OneOf(PAUC_KINDS), "kind", "pauc")
    y, s = _labels_scores(labels, scores, "pauc")
    if not _both_classes(y):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[:stop] <= max_fpr, fpr[0] == 0
    x, t = fpr[:stop], tpr[:stop]
    if x[-1] < max_fpr:  # then stop < len(fpr) since fpr ends at 1 >= max_fpr
        t_cut = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
        x, t = np.append(x, max_fpr), np.append(t, t_cut)
    area = float(np.sum(np.diff(x) * (t[1:] + t[:-1]) / 2.0))
    if kind == "mcclish":
        lo, hi = max_fpr**2 / 2.0, max_fpr
        return 0.5 * (1.0 + (area - lo) / (hi - lo))
    return area / max_fpr


def auc_interval(labels: Any, scores: Any, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """``[low, high]``: the percentile bootstrap interval of the AUC at ``level``, resampling the
    normal and the anomalous clips separately (so every resample has both classes), ``n_boot``
    times with a fixed seed. ``[nan, nan]`` when a class is missing.

    Each resample's AUC is the Mann-Whitney statistic from average ranks (ties count one half, as
    :func:`auc`), computed for all resamples at once."""
    y, s = _labels_scores(labels, scores, "auc_interval")
    if not _both_classes(y):
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    n1, n0 = len(pos), len(neg)
    sample = np.concatenate([pos[rng.integers(0, n1, (n_boot, n1))], neg[rng.integers(0, n0, (n_boot, n0))]], axis=1)
    ranks = stats.rankdata(sample, axis=1)
    aucs = (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    alpha = (1.0 - level) / 2.0
    return [float(np.quantile(aucs, alpha)), float(np.quantile(aucs, 1.0 - alpha))]


def group_table(records: Sequence[Any], scores: Any, max_fpr: float = 0.1, type_summary: str = "pooled") -> list[dict]:
    """AUC / pAUC rows per machine type and per machine id.

    ``records`` are objects with ``machine_type``, ``machine_id`` and ``label`` (e.g.
    :class:`humwatch.data.clips.Clip`), ``scores`` one anomaly score each. Each row is a dict with
    :data:`TABLE_COLUMNS`: ``machine_type``, ``machine_id`` (``"all"`` for the machine type's
    row), ``auc``, ``pauc`` (``max_fpr``), ``n_normal``, ``n_anomalous`` (the clips behind the
    numbers; a group without one of the classes gets NaN AUC/pAUC and its zero count says why).
    Rows are sorted by machine type, then id, with the ``"all"`` row first within a type.

    ``type_summary`` chooses the ``"all"`` row: ``"pooled"`` (default) computes AUC/pAUC over
    all of the type's clips together; ``"mean"`` is the arithmetic mean of the per-id values
    (NaN ids skipped; DCASE 2020's "Average" row), the right choice when each id has its own
    detector whose scores are not on a common scale. Counts are always totals.
    """
    check_value(type_summary, OneOf(("pooled", "mean")), "type_summary", "group_table")
    records = list(records)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(records) != s.size:
        raise ConfigError(f"group_table: {len(records)} records but {s.size} scores")
    try:
        types = np.array([str(r.machine_type) for r in records], dtype=object)
        ids = np.array([str(r.machine_id) for r in records], dtype=object)
        y = np.array([int(r.label) for r in records], dtype=np.int64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(f"group_table: records need machine_type, machine_id and label ({exc})") from None
    _labels_scores(y, s, "group_table")  # label / NaN checks

    def row(mtype: str, mid: str, mask: np.ndarray) -> dict:
        yy, ss = y[mask], s[mask]
        return {
            "machine_type": mtype,
            "machine_id": mid,
            "auc": auc(yy, ss),
            "auc_ci": auc_interval(yy, ss),
            "pauc": pauc(yy, ss, max_fpr=max_fpr),
            "n_normal": int((yy == 0).sum()),
            "n_anomalous": int((yy == 1).sum()),
        }

    def nanmean(values: list[float]) -> float:
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else float("nan")

    rows: list[dict] = []
    for mtype in sorted(set(types)):
        in_type = types == mtype
        id_rows = [row(mtype, mid, in_type & (ids == mid)) for mid in sorted(set(ids[in_type]))]
        summary = row(mtype, "all", in_type)
        if type_summary == "mean":
            summary["auc"] = nanmean([r["auc"] for r in id_rows])
            summary["pauc"] = nanmean([r["pauc"] for r in id_rows])
            summary["auc_ci"] = [nanmean([r["auc_ci"][0] for r in id_rows]), nanmean([r["auc_ci"][1] for r in id_rows])]
        rows.append(summary)
        rows.extend(id_rows)
    return rows


DOMAINS = ("source", "target")


def add_domain_columns(rows: list[dict], records: Sequence[Any], scores: Any) -> list[dict]:
    """Add ``auc_source`` and ``auc_target`` to :func:`group_table` rows, as DCASE 2022-2024 Task 2
    define them: the AUC of the normal clips *of that domain* against *every* anomalous clip of the
    row (both domains; the evaluation sets do not say which domain an anomaly is from), while the
    row's ``pauc`` stays over all of its clips. Rows whose clips carry no domain are left alone;
    a type's row (``"all"``) pools its clips. Returns ``rows``."""
    recs = list(records)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(recs) != s.size:
        raise ConfigError(f"add_domain_columns: {len(recs)} records but {s.size} scores")
    dom = np.array([str(getattr(r, "domain", "") or "") for r in recs], dtype=object)
    if not np.isin(dom, DOMAINS).any():
        return rows
    types = np.array([str(r.machine_type) for r in recs], dtype=object)
    ids = np.array([str(r.machine_id) for r in recs], dtype=object)
    y = np.array([int(r.label) for r in recs], dtype=np.int64)
    for row in rows:
        sel = types == row["machine_type"]
        if row["machine_id"] != "all":
            sel &= ids == row["machine_id"]
        for d in DOMAINS:
            keep = sel & ((y == 1) | (dom == d))
            row[f"auc_{d}"] = auc(y[keep], s[keep])
    return rows


def official_score(rows: Sequence[dict]) -> float:
    """DCASE's official score: the harmonic mean (:func:`scipy.stats.hmean`) of every machine id's
    (section's) AUC and pAUC, or with domains (:func:`add_domain_columns`) of every section's
    source AUC, target AUC and pAUC, over all machine types (DCASE 2021-2024; DCASE 2020 took
    the arithmetic mean). NaN values (a section without both classes) are left out; NaN when none
    is left (``RUN/dcase/result.csv``, :mod:`humwatch.dcase_eval`, writes NaN instead, as the DCASE
    evaluator cannot score such a section either). The harmonic mean punishes one bad section more than the arithmetic mean does."""
    values: list[float] = []
    for r in rows:
        if r.get("machine_id") == "all":
            continue
        keys = ("auc_source", "auc_target", "pauc") if "auc_source" in r else ("auc", "pauc")
        values += [float(r[k]) for k in keys if r.get(k) is not None and not math.isnan(float(r[k]))]
    if not values:
        return float("nan")
    if min(values) <= 0:
        return 0.0
    return float(stats.hmean(values))


def _gamma_fit(s: np.ndarray) -> tuple[float, float, float]:
    """(shape, loc, scale) of a gamma distribution fitted to ``s`` by maximum likelihood.

    The DCASE 2021+ Task 2 baselines call ``scipy.stats.gamma.fit(scores)`` with all three
    parameters free; that fit is unstable (in our checks it overshot the 95% quantile for shapes
    near 1), so ``loc`` is fixed instead. All scores > 0 (distances, reconstruction errors):
    ``loc = 0``, the usual two-parameter gamma, fitted with ``scipy.stats.gamma.fit(s, floc=0)``.
    Otherwise the support must start below the smallest score: ``loc`` is chosen by profile
    likelihood over ``min(s) - m`` for 26 margins ``m`` spaced logarithmically from ``1e-3`` to
    ``1e2`` standard deviations of ``s``, each fitted with ``scipy.stats.gamma.fit(s, floc=loc)``;
    that choice is shift- and scale-equivariant (``threshold(s + c) == threshold(s) + c``) and
    was close to the true quantile for gamma- and normal-distributed scores.
    """
    if s.min() > 0:
        a, loc, scale = stats.gamma.fit(s, floc=0.0)
        return float(a), float(loc), float(scale)
    best: tuple[float, float, float, float] | None = None
    for margin in s.std() * np.logspace(-3, 2, 26):
        loc = float(s.min() - margin)
        a, _, scale = stats.gamma.fit(s, floc=loc)
        ll = float(np.sum(stats.gamma.logpdf(s, a, loc=loc, scale=scale)))
        if math.isfinite(ll) and (best is None or ll > best[0]):
            best = (ll, float(a), loc, float(scale))
    if best is None:  # pragma: no cover - every candidate lies strictly below min(s)
        raise ConfigError("threshold_from_scores: could not fit a gamma distribution to the scores")
    return best[1], best[2], best[3]


def threshold_from_scores(normal_scores: Any, false_alarm_rate: float = 0.05, method: str = "percentile") -> float:
    """Decision threshold (score > threshold = anomalous) from *normal* validation scores only,
    aiming at ``false_alarm_rate`` of normal clips over it.

    ``method="percentile"``: the ``1 - false_alarm_rate`` quantile of the scores
    (:func:`numpy.quantile`, linear interpolation); needs at least ``ceil(1 / rate)`` scores,
    fewer cannot resolve that rate. ``method="gamma"``: fit a gamma distribution (see
    :func:`_gamma_fit`) and take its ``1 - false_alarm_rate`` quantile (``ppf``), the DCASE
    2021+ Task 2 baselines' way of setting a decision threshold; needs :data:`GAMMA_MIN_SCORES` scores that are not all equal.
    """
    check_value(method, OneOf(("percentile", "gamma")), "method", "threshold_from_scores")
    rate = check_value(false_alarm_rate, FALSE_ALARM_RATE, "false_alarm_rate", "threshold_from_scores")
    s = np.asarray(normal_scores, dtype=np.float64).ravel()
    if not np.isfinite(s).all():
        raise ConfigError(f"threshold_from_scores: {int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    if method == "percentile":
        need = max(1, math.ceil(1.0 / rate - 1e-9))
        if s.size < need:
            raise ConfigError(
                f"threshold_from_scores: a {rate:g} false-alarm rate needs at least {need} normal "
                f"scores for method='percentile', got {s.size} (use method='gamma' or more clips)"
            )
        return float(np.quantile(s, 1.0 - rate))
    if s.size < GAMMA_MIN_SCORES:
        raise ConfigError(f"threshold_from_scores: method='gamma' needs at least {GAMMA_MIN_SCORES} normal scores, got {s.size}")
    if float(s.max()) == float(s.min()):
        raise ConfigError("threshold_from_scores: all normal scores are equal; a gamma fit needs some spread")
    a, loc, scale = _gamma_fit(s)
    return float(stats.gamma.ppf(1.0 - rate, a, loc=loc, scale=scale))


def few_clips_warnings(rows: Iterable[dict]) -> list[str]:
    """One line per row whose AUC rests on fewer than :data:`FEW_CLIPS` clips of a class."""
    out = []
    for r in rows:
        n0, n1 = r.get("n_normal", 0), r.get("n_anomalous", 0)
        if min(n0, n1) < FEW_CLIPS:
            out.append(
                f"{r['machine_type']} {r['machine_id']}: only {n0} normal and {n1} anomalous test clips; "
                f"its AUC moves in steps of {1 / max(n0 * n1, 1):.3g} (see its 95 % interval)"
            )
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (float, int)) for v in value):
        return "n/a" if any(math.isnan(v) for v in value) else f"[{value[0]:.3f}, {value[1]:.3f}]"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{float(value):.4f}"
    if isinstance(value, np.integer):
        value = int(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """GitHub markdown table of ``rows`` (dicts) with one column per key in ``columns`` (the
    header is the key). Floats get 4 decimals, NaN / None / a missing key read ``n/a``, ``|``
    in text is escaped. Ends with a newline."""
    columns = list(columns)
    if not columns:
        raise ConfigError("markdown_table: no columns given")
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"
