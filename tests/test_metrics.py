"""Metrics: AUC, DCASE pAUC against hand computations, group tables, thresholds, markdown."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from humwatch.data.clips import Clip
from humwatch.errors import ConfigError
from humwatch.metrics import TABLE_COLUMNS, auc, auc_interval, group_table, markdown_table, pauc, threshold_from_scores

# --------------------------------------------------------------------------------- auc / pauc


def test_auc_known_example():
    # pairs (anomalous, normal): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 of 4
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
    assert auc([1, 0], [2.0, 1.0]) == 1.0 and auc([1, 0], [1.0, 2.0]) == 0.0


@pytest.fixture
def step_case():
    """10 normals scored 1..10, anomalies 12, 11, 9.5, 0.5. ROC (fpr, tpr):
    (0,0) (0,.25) (0,.5) (.1,.5) (.1,.75) (.2,.75) ... (1,.75) (1,1)."""
    normal = np.arange(1.0, 11.0)
    anomalous = np.array([12.0, 11.0, 9.5, 0.5])
    return np.r_[np.zeros(10, int), np.ones(4, int)], np.r_[normal, anomalous]


def test_pauc_hand_computed_steps(step_case):
    y, s = step_case
    # [0, 0.1]: tpr 0.5 all the way -> area 0.05 -> / 0.1
    assert pauc(y, s, max_fpr=0.1, kind="area") == pytest.approx(0.5, abs=1e-12)
    # [0, 0.15]: 0.05 + 0.05 * 0.75 = 0.0875 -> / 0.15
    assert pauc(y, s, max_fpr=0.15, kind="area") == pytest.approx(0.0875 / 0.15, abs=1e-12)
    # max_fpr = 1 is the full AUC: 0.5*0.1 + 0.75*0.9 = 0.725
    assert pauc(y, s, max_fpr=1.0, kind="area") == pytest.approx(0.725, abs=1e-12)
    assert auc(y, s) == pytest.approx(0.725, abs=1e-12)


def test_pauc_hand_computed_tie_and_interpolation():
    # normals 1,2,3,4; anomalies 5 and 3 (tied with a normal).
    # ROC: (0,0) (0,.5) (.25,.5) then the tie is a diagonal to (.5,1), then (1,1).
    y = [0, 0, 0, 0, 1, 1]
    s = [1.0, 2.0, 3.0, 4.0, 5.0, 3.0]
    # [0, .5]: .25*.5 + .25*(.5+1)/2 = .3125 -> / .5
    assert pauc(y, s, max_fpr=0.5, kind="area") == pytest.approx(0.625, abs=1e-12)
    # cut inside the diagonal at .375 where tpr = .75: .125 + .125*(.5+.75)/2 = .203125
    assert pauc(y, s, max_fpr=0.375, kind="area") == pytest.approx(0.203125 / 0.375, abs=1e-12)


def test_pauc_is_not_mcclish_unless_asked():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + y, 1)  # with ties
    raw = pauc(y, s, max_fpr=0.1, kind="area")
    mcclish = pauc(y, s, max_fpr=0.1)  # the default: what the DCASE evaluator prints
    assert mcclish == pytest.approx(roc_auc_score(y, s, max_fpr=0.1), abs=1e-12)
    assert abs(raw - mcclish) > 0.05
    # the raw normalised area back from McClish: 0.5*(1+(A-m)/(M-m)) with m=.005, M=.1
    area = (2 * mcclish - 1) * (0.1 - 0.005) + 0.005
    assert raw == pytest.approx(area / 0.1, abs=1e-12)


def test_pauc_extremes():
    y = [0, 0, 0, 1, 1]
    assert pauc(y, [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert pauc(y, [5, 4, 3, 2, 1], kind="area") == pytest.approx(0.0)


def test_single_class_gives_nan():
    assert math.isnan(auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(pauc([1, 1], [0.1, 0.2]))
    assert math.isnan(auc([], []))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: auc([0, 1], [0.1]), "2 labels but 1 scores"),
        (lambda: auc([0, 2], [0.1, 0.2]), "labels must be 0"),
        (lambda: auc([0, 1], [0.1, np.nan]), "NaN"),
        (lambda: pauc([0, 1], [0.1, 0.2], max_fpr=0.0), "max_fpr"),
    ],
)
def test_metric_input_errors(call, match):
    with pytest.raises(ConfigError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


# -------------------------------------------------------------------------------- group_table


def _clip(mtype, mid, label, i):
    return Clip(path=f"/d/{mtype}/{mid}/{label}_{i}.wav", machine_type=mtype, machine_id=mid, label=label)


@pytest.fixture
def table_case():
    records, scores = [], []
    # pump first and ids out of order on purpose
    for i, (lab, sc) in enumerate([(0, 0.1), (1, 0.9), (0, 0.2)]):
        records.append(_clip("pump", "id_00", lab, i))
        scores.append(sc)
    for i, sc in enumerate([0.3, 0.2]):  # fan id_02: normals only
        records.append(_clip("fan", "id_02", 0, i))
        scores.append(sc)
    for i, (lab, sc) in enumerate([(0, 0.1), (0, 0.4), (0, 0.2), (1, 0.35), (1, 0.8)]):
        records.append(_clip("fan", "id_00", lab, i))
        scores.append(sc)
    return records, np.array(scores)


def test_group_table_rows_counts_and_order(table_case):
    records, scores = table_case
    rows = group_table(records, scores)
    assert [(r["machine_type"], r["machine_id"]) for r in rows] == [
        ("fan", "all"),
        ("fan", "id_00"),
        ("fan", "id_02"),
        ("pump", "all"),
        ("pump", "id_00"),
    ]
    assert all(tuple(r) == TABLE_COLUMNS for r in rows)
    by = {(r["machine_type"], r["machine_id"]): r for r in rows}
    assert (by["fan", "all"]["n_normal"], by["fan", "all"]["n_anomalous"]) == (5, 2)
    assert (by["fan", "id_00"]["n_normal"], by["fan", "id_00"]["n_anomalous"]) == (3, 2)
    assert (by["fan", "id_02"]["n_normal"], by["fan", "id_02"]["n_anomalous"]) == (2, 0)
    assert (by["pump", "all"]["n_normal"], by["pump", "all"]["n_anomalous"]) == (2, 1)
    # fan id_00: normals .1 .4 .2, anomalies .35 .8 -> 5 of 6 pairs
    assert by["fan", "id_00"]["auc"] == pytest.approx(5 / 6)
    # fan all pools id_02's normals .3 .2 too: .35 beats 4 of the 5 normals, .8 all 5 -> 9/10
    assert by["fan", "all"]["auc"] == pytest.approx(0.9)
    fan = np.array([r.machine_type == "fan" for r in records])
    labels = np.array([r.label for r in records])
    assert by["fan", "all"]["auc"] == pytest.approx(roc_auc_score(labels[fan], scores[fan]))
    assert math.isnan(by["fan", "id_02"]["auc"]) and math.isnan(by["fan", "id_02"]["pauc"])
    assert by["pump", "id_00"]["auc"] == 1.0 and by["pump", "id_00"]["pauc"] == 1.0


def test_group_table_mean_summary(table_case):
    records, scores = table_case
    rows = group_table(records, scores, type_summary="mean")
    fan_all = rows[0]
    assert fan_all["machine_id"] == "all"
    assert fan_all["auc"] == pytest.approx(5 / 6)  # mean over ids with a value (id_02 is NaN)
    assert (fan_all["n_normal"], fan_all["n_anomalous"]) == (5, 2)


def test_group_table_errors(table_case):
    records, scores = table_case
    with pytest.raises(ConfigError, match="10 records but 9 scores"):
        group_table(records, scores[:-1])
    with pytest.raises(ConfigError, match="type_summary"):
        group_table(records, scores, type_summary="median")
    with pytest.raises(ConfigError, match="machine_type"):
        group_table([object()], [0.5])


# --------------------------------------------------------------------------------- thresholds


def test_percentile_threshold_hits_the_rate():
    normal = np.random.default_rng(0).normal(size=100_000)
    for rate in (0.01, 0.05, 0.2):
        thr = threshold_from_scores(normal, false_alarm_rate=rate)
        assert np.mean(normal > thr) == pytest.approx(rate, abs=1e-3)


def test_gamma_threshold_close_to_true_quantile():
    scores = stats.gamma.rvs(3.0, scale=2.0, size=20_000, random_state=1)
    thr = threshold_from_scores(scores, false_alarm_rate=0.05, method="gamma")
    assert thr == pytest.approx(stats.gamma.ppf(0.95, 3.0, scale=2.0), rel=0.02)


def test_gamma_threshold_with_negative_scores_shifts_the_support():
    # gamma with support starting at -5: scores are negative, so loc is fitted below the minimum
    scores = stats.gamma.rvs(2.0, loc=-5.0, scale=1.0, size=5_000, random_state=2)
    assert scores.min() < 0
    thr = threshold_from_scores(scores, false_alarm_rate=0.05, method="gamma")
    true = stats.gamma.ppf(0.95, 2.0, loc=-5.0)
    assert thr == pytest.approx(true, abs=0.15)
    # shift-equivariant once the minimum is not positive
    assert threshold_from_scores(scores - 7.0, 0.05, "gamma") == pytest.approx(thr - 7.0, abs=1e-6)


@pytest.mark.parametrize(
    "args,match",
    [
        (dict(normal_scores=np.arange(100.0), false_alarm_rate=0.0), "false_alarm_rate must be a number above 0 and below 1"),
        (dict(normal_scores=np.arange(100.0), false_alarm_rate=1.0), "false_alarm_rate must be a number above 0 and below 1"),
        (dict(normal_scores=np.arange(19.0), false_alarm_rate=0.05), "at least 20 normal scores"),
        (dict(normal_scores=np.arange(1.0, 5.0), method="gamma"), "at least 5"),
        (dict(normal_scores=np.ones(10), method="gamma"), "all normal scores are equal"),
        (dict(normal_scores=np.arange(100.0), method="kde"), "method"),
        (dict(normal_scores=np.r_[np.arange(100.0), np.nan]), "NaN"),
    ],
)
def test_threshold_errors(args, match):
    with pytest.raises(ConfigError, match=match) as e:
        threshold_from_scores(**args)
    assert "\n" not in str(e.value)


def test_percentile_threshold_minimum_is_enough():
    assert threshold_from_scores(np.arange(20.0), 0.05) == pytest.approx(np.quantile(np.arange(20.0), 0.95))


# ------------------------------------------------------------------------------------ markdown


def test_markdown_table_formatting():
    rows = [
        {
            "machine_type": "fan",
            "machine_id": "all",
            "auc": 0.91234567,
            "auc_ci": [0.8, 0.95],
            "pauc": float("nan"),
            "n_normal": np.int64(3),
            "n_anomalous": 0,
        },
        {"machine_type": "a|b", "machine_id": "id_00", "auc": 1.0, "auc_ci": [float("nan")] * 2, "pauc": None, "n_normal": 1},
    ]
    assert markdown_table(rows) == (
        "| machine_type | machine_id | auc | auc_ci | pauc | n_normal | n_anomalous |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        "| fan | all | 0.9123 | [0.800, 0.950] | n/a | 3 | 0 |\n"
        "| a\\|b | id_00 | 1.0000 | n/a | n/a | 1 | n/a |\n"
    )
    assert markdown_table([], ["x"]) == "| x |\n| --- |\n"


def test_auc_interval_brackets_the_auc_and_narrows_with_more_clips():
    rng = np.random.default_rng(0)

    def case(n):
        y = np.r_[np.zeros(n), np.ones(n)].astype(int)
        return y, np.r_[rng.normal(0, 1, n), rng.normal(1, 1, n)]

    y, s = case(20)
    lo, hi = auc_interval(y, s)
    assert lo < auc(y, s) < hi and 0 <= lo and hi <= 1
    y2, s2 = case(500)
    lo2, hi2 = auc_interval(y2, s2)
    assert hi2 - lo2 < (hi - lo) / 2  # the interval narrows as the clips grow
    # the vectorised rank AUC of one resample equals scikit-learn's, ties included
    t = np.round(s, 0)
    assert auc_interval(y, t, n_boot=2000)[0] <= roc_auc_score(y, t) <= auc_interval(y, t, n_boot=2000)[1]
    assert all(math.isnan(v) for v in auc_interval([0, 0], [0.1, 0.2]))
    assert auc_interval(y, s) == auc_interval(y, s)  # seeded


def test_group_rows_carry_intervals_and_few_clip_warnings():
    from humwatch.data.clips import Clip
    from humwatch.metrics import few_clips_warnings

    clips = [Clip(f"{i}.wav", "fan", "id_00", int(i >= 12)) for i in range(15)]
    rows = group_table(clips, np.arange(15.0))
    assert rows[0]["auc"] == 1.0 and rows[0]["auc_ci"] == [1.0, 1.0]
    warn = few_clips_warnings(rows)
    assert len(warn) == 2 and "only 12 normal and 3 anomalous" in warn[0]
