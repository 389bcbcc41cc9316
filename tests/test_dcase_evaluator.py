"""result.csv holds the DCASE 2022-2024 evaluator's numbers (nttcslab/dcase2023_task2_evaluator), pinned
on hand-made cases whose values are worked out by hand below; a DCASE tree runs on its own split."""

import csv
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from humwatch.compare_report import leaderboard
from humwatch.data.clips import Clip
from humwatch.dcase_eval import COLUMNS, Section, jackknife_ci95, result_rows, roc_areas
from humwatch.dcase_format import write_dcase
from humwatch.errors import ConfigError
from humwatch.pipeline import RunConfig, prepare_clips, split_description

EPS = sys.float_info.epsilon
T3 = 3.182446305284263  # Student's t, 3 degrees of freedom, two-sided 95 % (t-tables: 3.182)

# Section 00 of "fan" (labels 1 = anomalous; decisions: score > 0.55):
#   source normals 0.1 0.2 0.6   source anomalies 0.5 0.9
#   target normals 0.3 0.7 0.8   target anomalies 0.75 0.95
S00 = dict(
    labels=[0, 0, 0, 1, 1, 0, 0, 0, 1, 1],
    scores=[0.1, 0.2, 0.6, 0.5, 0.9, 0.3, 0.7, 0.8, 0.75, 0.95],
    decisions=[0, 0, 1, 0, 1, 0, 1, 1, 1, 1],
    domains=["source"] * 5 + ["target"] * 5,
)
# Section 01: every anomaly above every normal; the source decisions are all right, the target ones all 0.
S01 = dict(
    labels=[0, 0, 0, 1, 1, 0, 0, 0, 1, 1],
    scores=[0.1, 0.2, 0.3, 0.8, 0.9, 0.4, 0.5, 0.6, 0.7, 0.85],
    decisions=[0, 0, 0, 1, 1, 0, 0, 0, 0, 0],
    domains=["source"] * 5 + ["target"] * 5,
)

# Section 00 by hand:
#   AUC (source): source normals {.1 .2 .6} against ALL anomalies {.5 .9 .75 .95}: pairs won 2+3+3+3 = 11 of 12
#   AUC (target): target normals {.3 .7 .8} against {.5 .9 .75 .95}: 1+3+2+3 = 9 of 12
#     (the old, wrong, per-domain-anomalies AUCs were 5/6 both)
#   AUC (all): 6 normals against 4 anomalies: .5 beats 3, .9 beats 6, .75 beats 5, .95 beats 6: 20 of 24
#   pAUC: 6 normals, so the first false positive is at FPR 1/6 > 0.1; before it .95 and .9 are found: TPR 2/4
#     on [0, 0.1]: area 0.1 * 0.5 = 0.05; McClish 0.5 * (1 + (0.05 - 0.005) / (0.1 - 0.005)) = 14/19
#   source decisions: tp 1 (.9), fp 1 (.6), fn 1 (.5): precision 1/2, recall 1/2, F1 1/2
#   target decisions: tp 2, fp 2 (.7 .8), fn 0: precision 1/2, recall 1, F1 2 * .5 * 1 / 1.5 = 2/3
ROW00 = [20 / 24, 11 / 12, 9 / 12, 14 / 19, 0.5, 0.5, 0.5, 1.0, 0.5, 2 / 3]
# Section 01: every AUC and the pAUC 1; source precision = recall = F1 = 1; target tp 0: all 0 (0 / eps)
ROW01 = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def _rows(sections):
    return result_rows([Section("fan", sec, **kw) for sec, kw in sections])


def _find(rows, name):
    hits = [r for r in rows if r and r[0] == name]
    assert len(hits) == 1, (name, rows)
    return hits[0]


def test_section_rows_are_the_evaluators_definitions():
    rows = _rows([("00", S00), ("01", S01)])
    assert rows[0] == ["fan"]
    assert rows[1] == ["section", *COLUMNS]
    assert rows[1] == [
        "section",
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
    ]
    assert [float(v) for v in rows[2][1:]] == pytest.approx(ROW00, abs=1e-12)
    assert [float(v) for v in rows[3][1:]] == pytest.approx(ROW01, abs=1e-12)
    # written as the evaluator writes it: sklearn's float to the last digit (0.9166666666666667, not 11/12's ...66)
    keep = [i for i, (y, d) in enumerate(zip(S00["labels"], S00["domains"])) if y or d == "source"]
    want = roc_auc_score([S00["labels"][i] for i in keep], [S00["scores"][i] for i in keep])
    assert rows[2][0] == "00" and rows[2][2] == str(want) == "0.9166666666666667"


def test_mean_rows_official_score_and_layout():
    rows = _rows([("00", S00), ("01", S01)])
    assert rows[4] == ["", "", "AUC", "pAUC", "precision", "recall", "F1 score"]
    # each mean runs over [section 00 source, 01 source, 00 target, 01 target]; pAUC counts once per domain
    #   AUC: 11/12, 1, 3/4, 1: amean (11 + 12 + 9 + 12) / 48 = 11/12; hmean 4 / (12/11 + 1 + 4/3 + 1) = 66/73
    #   pAUC: 14/19, 1, 14/19, 1: amean (28/19 + 2) / 4 = 33/38; hmean 4 / (19/14 * 2 + 2) = 28/33
    #   precision .5 1 .5 0: amean 1/2; recall .5 1 1 0: amean 5/8; F1 .5 1 2/3 0: amean 13/24
    #   a 0 enters the hmean as eps: 4 / (... + 1/eps) = 4 eps to 15 digits
    am = _find(rows, "arithmetic mean")
    assert am[1] == "" and [float(v) for v in am[2:]] == pytest.approx([11 / 12, 33 / 38, 0.5, 5 / 8, 13 / 24], abs=1e-12)
    hm = [float(v) for v in _find(rows, "harmonic mean")[2:]]
    assert hm[:2] == pytest.approx([66 / 73, 28 / 33], abs=1e-12)
    assert hm[2:] == pytest.approx([4 * EPS] * 3, rel=1e-12)
    #   source half: AUC 11/12, 1: 2 / (12/11 + 1) = 22/23; pAUC 28/33; precision, recall, F1 .5 and 1: 2/3
    src = [float(v) for v in _find(rows, "source harmonic mean")[2:]]
    assert src == pytest.approx([22 / 23, 28 / 33, 2 / 3, 2 / 3, 2 / 3], abs=1e-12)
    #   target half: AUC 3/4, 1: 2 / (4/3 + 1) = 6/7; pAUC 28/33; the rest hold a 0: 2 / (x + 1/eps) = 2 eps
    tgt = [float(v) for v in _find(rows, "target harmonic mean")[2:]]
    assert tgt[:2] == pytest.approx([6 / 7, 28 / 33], abs=1e-12) and tgt[2:] == pytest.approx([2 * EPS] * 3, rel=1e-12)
    # one machine type: the rows over all are the same numbers under the evaluator's longer names
    over = " over all machine types, sections, and domains"
    assert [float(v) for v in _find(rows, "arithmetic mean" + over)[2:]] == [float(v) for v in am[2:]]
    assert _find(rows, "target harmonic mean" + over)[2:] == _find(rows, "target harmonic mean")[2:]
    # official score: hmean of 11/12, 1, 3/4, 1, 14/19, 1 = 6 / (504 + 462 + 616 + 462 + 627 + 462) * 462 = 2772/3133
    off = _find(rows, "official score")
    assert off[1] == "" and float(off[2]) == pytest.approx(2772 / 3133, abs=1e-12)
    names = [r[0] for r in rows if r]
    assert names[-2:] == ["official score", "official score ci95"] and rows[-1] == []
    assert names.index("fan") == 0 and names.count("") == 2  # the two mean headers


def test_official_score_pools_machine_types_and_means_are_not_weighted():
    # a second machine type whose one section is perfect: the overall arithmetic AUC mean runs over the
    # 6 domain values 11/12, 1, 3/4, 1 (fan) and 1, 1 (pump) = (11 + 12 + 9 + 12 + 12 + 12) / 72 = 68/72
    rows = result_rows([Section("fan", "00", **S00), Section("fan", "01", **S01), Section("pump", "00", **S01)])
    assert [r[0] for r in rows if r and r[0] in ("fan", "pump")] == ["fan", "pump"]
    over = _find(rows, "arithmetic mean over all machine types, sections, and domains")
    assert float(over[2]) == pytest.approx(68 / 72, abs=1e-12)
    # official: hmean of fan's six and pump's three 1s: 9 / (3133/462 + 3) = 9 * 462 / (3133 + 1386) = 4158/4519
    assert float(_find(rows, "official score")[2]) == pytest.approx(4158 / 4519, abs=1e-12)


def test_jackknife_ci95_by_hand():
    # labels 0 0 1 1, scores .1 .4 .35 .8; AUC 3/4. Leaving out .1, .4, .35, .8 gives AUCs 1/2, 1, 1, 1/2:
    #   mean 3/4, squares 4 * 1/16 = 1/4; the evaluator's sigma sqrt(1/4 / (4 * 3)) = sqrt(1/48); ci95 t3 * sigma
    # pAUCs left out: .1 -> one normal (.4) above .35 but below .8: TPR 1/2 up to FPR 1: 14/19;
    #   .4 -> 1; .35 -> 1; .8 -> .35 below .4: TPR 0 on [0, 0.1]: 0.5 * (1 - 0.005/0.095) = 9/19
    #   mean 61/76; deviations -5/76, 15/76, 15/76, -25/76: squares 1100/5776; sigma sqrt(1100/5776/12)
    a, p = jackknife_ci95([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert a == pytest.approx(T3 * (1 / 48) ** 0.5, rel=1e-12)
    assert p == pytest.approx(T3 * (1100 / 5776 / 12) ** 0.5, rel=1e-12)
    # result.csv's ci95 is the mean of the two, over every clip of every section pooled
    rows = result_rows(
        [
            Section("fan", "00", [0, 1], [0.1, 0.35], [0, 1], ["source", "target"]),
            Section("fan", "01", [0, 1], [0.4, 0.8], [0, 1], ["source", "target"]),
        ]
    )
    assert float(_find(rows, "official score ci95")[2]) == pytest.approx((a + p) / 2, rel=1e-12)


def _evaluator_jackknife(y, s, fn):
    """The evaluator's procedure written plainly: each clip left out, sklearn on the rest."""
    n = len(y)
    est = np.array([fn(np.delete(y, i), np.delete(s, i)) for i in range(n)])
    from scipy import stats

    return abs(stats.t.ppf(0.025, n - 1)) * np.sqrt(np.sum((est - est.mean()) ** 2) / (n * (n - 1)))


def test_fast_areas_and_jackknife_agree_with_sklearn_left_out_one_by_one():
    rng = np.random.default_rng(3)
    for k in range(60):
        n = int(rng.integers(5, 40))
        y = np.r_[0, 0, 1, 1, rng.integers(0, 2, n - 4)]
        s = np.round(rng.normal(size=n) + y, int(k % 3))  # ties too
        a, p = roc_areas(y, s)
        assert a == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert p == pytest.approx(roc_auc_score(y, s, max_fpr=0.1), abs=1e-12)
    y = np.r_[np.zeros(30, int), np.ones(12, int)]
    s = np.round(rng.normal(size=42) + y, 1)
    a, p = jackknife_ci95(y, s)
    assert a == pytest.approx(_evaluator_jackknife(y, s, roc_auc_score), rel=1e-9)
    assert p == pytest.approx(_evaluator_jackknife(y, s, lambda u, v: roc_auc_score(u, v, max_fpr=0.1)), rel=1e-9)


def test_without_domains_the_same_definitions_fold_into_one_column():
    # 3 normals .1 .2 .6, 2 anomalies .5 .9; decisions > .55. AUC: .5 beats 2, .9 beats 3: 5/6;
    # pAUC: .9 first (TPR 1/2), first normal at FPR 1/3 > 0.1: 14/19; tp 1, fp 1, fn 1: 1/2 each
    rows = result_rows([Section("ToyCar", "00", [0, 0, 0, 1, 1], [0.1, 0.2, 0.6, 0.5, 0.9], [0, 0, 1, 0, 1])])
    assert rows[1] == ["section", "AUC", "pAUC", "precision", "recall", "F1 score"]
    assert [float(v) for v in rows[2][1:]] == pytest.approx([5 / 6, 14 / 19, 0.5, 0.5, 0.5], abs=1e-12)
    assert not any(r and "source" in r[0] for r in rows)
    # official: hmean(5/6, 14/19) = 2 / (6/5 + 19/14) = 140/179
    assert float(_find(rows, "official score")[2]) == pytest.approx(140 / 179, abs=1e-12)


def test_an_undefined_value_is_nan_not_left_out():
    only_normals_in_target = dict(S00, labels=[0, 0, 0, 1, 1, 0, 0, 0, 0, 0])
    rows = _rows([("00", only_normals_in_target)])
    # AUC (target) still has the source anomalies to compare against: target normals .3 .7 .8 .75 .95 against
    # .5 (beats 1) and .9 (beats 4): 5 of 10. Its precision: tp 0 of 4 flagged: 0; recall: 0 / eps = 0
    assert float(rows[2][3]) == pytest.approx(5 / 10, abs=1e-12)
    assert float(rows[2][6]) == 0.0 and float(rows[2][8]) == 0.0
    rows = _rows([("00", dict(S00, labels=[0] * 10))])  # no anomaly at all
    assert rows[2][1] == "nan" and _find(rows, "official score")[2] == "nan"
    with pytest.raises(ConfigError, match="fan section 00"):
        _rows([("00", dict(S00, scores=[float("nan")] * 10))])


def test_write_dcase_files_and_result_from_clips(tmp_path):
    clips = [
        Clip(
            f"/d/fan/test/section_00_{dom}_test_{'anomaly' if y else 'normal'}_{i:04d}.wav",
            "fan",
            "section_00",
            y,
            split="test",
            domain=dom,
        )
        for i, (y, dom) in enumerate(zip(S00["labels"], S00["domains"]))
    ]
    scores = {c.key: v for c, v in zip(clips, S00["scores"])}
    path = write_dcase(tmp_path, clips, scores, {("fan", "section_00"): [0.55]})  # threshold: 0.9 quantile of [.55]
    decisions = dict(csv.reader(open(tmp_path / "decision_result_fan_section_00_test.csv")))
    assert [int(decisions[c.path.rsplit("/", 1)[1]]) for c in clips] == S00["decisions"]
    lines = list(csv.reader(open(path)))
    assert [float(v) for v in lines[2][1:]] == pytest.approx(ROW00, abs=1e-12)


# ------------------------------------------------------------------------------------------ the split


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.fixture
def dcase_names(tmp_path):
    root = tmp_path / "dcase"
    for k in range(10):
        _touch(root / "fan" / "train" / f"section_00_source_train_normal_{k:04d}_a.wav")
    for dom in ("source", "target"):
        for label in ("normal", "anomaly"):
            for k in range(10):
                _touch(root / "fan" / "test" / f"section_00_{dom}_test_{label}_{k:04d}_a.wav")
    return root


def test_a_dcase_tree_keeps_its_own_split_by_default(dcase_names):
    cfg = RunConfig(data=str(dcase_names))
    clips = prepare_clips(cfg)
    assert cfg.dataset_split is True
    for c in clips:
        assert c.split == ("train" if "/train/" in c.path else "test"), c.path
    assert sum(c.split == "test" for c in clips) == 40 and sum(c.split == "train" for c in clips) == 10
    assert "none held out" in split_description(cfg, clips)


def test_a_dcase_tree_holds_out_validation_only_when_asked(dcase_names):
    cfg = RunConfig(data=str(dcase_names), dataset_val_fraction=0.2)
    clips = prepare_clips(cfg)
    assert [sum(c.split == s for c in clips) for s in ("train", "val", "test")] == [8, 2, 40]
    assert all("/train/" in c.path for c in clips if c.split == "val")
    with pytest.raises(ConfigError, match="dataset-val"):
        RunConfig(data=str(dcase_names), dataset_val_fraction=1.5).validate()


def test_the_study_split_on_a_dcase_tree_when_asked(dcase_names):
    cfg = RunConfig(data=str(dcase_names), dataset_split=False)
    clips = prepare_clips(cfg)
    assert cfg.dataset_split is False
    # the study's split per (machine, id, label): 30 normals -> 8 test (round .25*30 = 7.5 up), 2 val; 20 anomalies -> 5, 2
    n = {(s, y): sum(c.split == s and c.label == y for c in clips) for s in ("train", "val", "test") for y in (0, 1)}
    assert n == {("test", 0): 8, ("val", 0): 2, ("train", 0): 20, ("test", 1): 5, ("val", 1): 2, ("train", 1): 13}


def test_mimii_and_folders_keep_the_study_split_by_default(tmp_path):
    mimii = tmp_path / "mimii"
    for label, n in (("normal", 20), ("abnormal", 8)):
        for k in range(n):
            _touch(mimii / "6dB_fan" / "fan" / "id_00" / label / f"{k:08d}.wav")
    folder = tmp_path / "pump"
    for label, n in (("normal", 20), ("abnormal", 8)):
        for k in range(n):
            _touch(folder / label / f"{k:03d}.wav")
    for root in (mimii, folder):
        cfg = RunConfig(data=str(root))
        clips = prepare_clips(cfg)
        assert cfg.dataset_split is False
        # 20 normals: 5 test, round(.1 * 15) = 2 val, 13 train; 8 anomalies: 2 test, round(.6) = 1 val, 5 train
        n = [sum(c.split == s for c in clips) for s in ("test", "val", "train")]
        assert n == [7, 3, 18], root


# ---------------------------------------------------------------------------------------- compare


def _record(name, **kw):
    return {
        "name": name,
        "status": "ok",
        "official_score": 0.8,
        "mean_auc": 0.85,
        "mean_pauc": 0.7,
        "auc_source": 0.9,
        "auc_target": 0.8,
        "by_type": {"fan": {"auc": 0.85}},
        "seconds": 1,
        **kw,
    }


def test_compare_labels_every_mean():
    head, rows = leaderboard([_record("a")])
    assert head[2:9] == [
        "score (hmean)",
        "AUC (amean of ids)",
        "pAUC (amean of ids)",
        "source AUC (amean of ids)",
        "target AUC (amean of ids)",
        "fan AUC (pooled)",
        "seconds",
    ]
    head, _ = leaderboard([_record("a")], per_id=True)
    assert "fan AUC (amean of ids)" in head


# ------------------------------------------------------------------------------- a run on a DCASE tree


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    import soundfile as sf
    from helpers import make_clip

    root = tmp_path_factory.mktemp("dcase_run")
    rng = np.random.default_rng(1)
    for sub in ("train", "test"):
        (root / "fan" / sub).mkdir(parents=True)
    for k in range(6):
        sf.write(
            str(root / "fan" / "train" / f"section_00_source_train_normal_{k:04d}_a.wav"),
            make_clip(rng, False, seconds=1.0, channels=1),
            16000,
        )
    for dom in ("source", "target"):
        for label in ("normal", "anomaly"):
            for k in range(3):
                sf.write(
                    str(root / "fan" / "test" / f"section_00_{dom}_test_{label}_{k:04d}_a.wav"),
                    make_clip(rng, label == "anomaly", seconds=1.0, channels=1),
                    16000,
                )
    return root


@pytest.mark.parametrize("dataset_split", [None, False])
def test_a_run_says_when_its_dcase_files_are_not_the_official_test_set(small_tree, tmp_path, dataset_split):
    import json

    from humwatch.pipeline import run

    cfg = RunConfig(data=str(small_tree), settings={"epochs": 1}, dataset_split=dataset_split, dcase_output=True)
    run(cfg, tmp_path / "run", progress=False)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    written = list(csv.reader(open(tmp_path / "run" / "dcase" / "anomaly_score_fan_section_00_test.csv")))
    if dataset_split is None:  # the default on a DCASE tree: its own split, all 12 test clips in the files
        assert saved["dataset_split"] is True and len(written) == 12 and "notes" not in res
        assert res["split"].startswith("the dataset's own: 6 training clips, none held out")
    else:
        assert saved["dataset_split"] is False and len(written) < 12
        n = sum("_test_" in r[0] for r in written)  # the study's test set takes clips of both folders
        extra = f" and {len(written) - n} training clip(s)" if len(written) > n else ""
        assert res["notes"][0].startswith(f"the DCASE files hold {n} of the 12 clips of the dataset's test folders{extra};")
    assert f"- split: {res['split']}" in (tmp_path / "run" / "results.md").read_text()


def test_the_official_test_note_judges_by_the_dcase_folders():
    from humwatch.dcase_format import official_test_note

    def clip(folder, k, split):
        return Clip(f"/d/fan/{folder}/section_00_source_{folder}_normal_{k:04d}.wav", "fan", "section_00", 0, split=split, domain="source")

    clips = [clip("train", 0, "train"), clip("train", 1, "test"), clip("test", 0, "test"), clip("test", 1, "train")]
    assert official_test_note(clips, [c for c in clips if c.split == "test"]).startswith(
        "the DCASE files hold 1 of the 2 clips of the dataset's test folders and 1 training clip(s)"
    )
    assert official_test_note(clips, [clips[2], clips[3]]) == ""  # e.g. a saved official split: no warning
    assert official_test_note([Clip("/d/pump/normal/a.wav", "pump", "id_00", 0, split="test")], []) == ""


def test_the_dataset_split_without_training_clips_is_one_error(dcase_names, tmp_path):
    from humwatch.errors import DatasetError

    for f in (dcase_names / "fan" / "train").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="its own train/test split has no training clips.*--study-split"):
        prepare_clips(RunConfig(data=str(dcase_names)))
    mimii = tmp_path / "m" / "6dB_fan" / "fan" / "id_00"
    for label in ("normal", "abnormal"):
        _touch(mimii / label / "00000000.wav")
    with pytest.raises(DatasetError, match="no test clips"):
        prepare_clips(RunConfig(data=str(tmp_path / "m"), dataset_split=True))


def test_run_says_when_early_stopping_took_training_clips(monkeypatch, tmp_path, capsys, dcase_names):
    import humwatch.pipeline as pipeline
    from humwatch.cli import main

    def fake_run(cfg, out, **kw):
        clips = prepare_clips(cfg)
        info = {"label": "idnet", "split": split_description(cfg, clips), "groups": {"fan": {"n_train": 9, "training": {"n_held_out": 1}}}}
        return pipeline.RunResult([], {}, clips, [], info)

    monkeypatch.setattr(pipeline, "run", fake_run)
    with pytest.raises(SystemExit) as e:
        main(["run", "--data", str(dcase_names), "--out", str(tmp_path / "r"), "--method", "idnet", "-q"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "split: the dataset's own: 10 training clips, none held out; 40 test clips" in out
    assert "fan: early stopping held out 1 of the training clips" in out
