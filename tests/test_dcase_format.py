"""`humwatch run --format dcase`: the DCASE Task 2 files, on a small DCASE 2023-like tree with domains."""

import csv

import numpy as np
import pytest
import soundfile as sf
from helpers import make_clip

from humwatch.cli import main
from humwatch.metrics import auc, pauc


@pytest.fixture(scope="module")
def dcase_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcase")
    for sub in ("train", "test"):
        (root / "fan" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)

    def write(name: str, anomalous: bool) -> None:
        sf.write(str(root / "fan" / name), make_clip(rng, anomalous, seconds=2.0, channels=1), 16000)

    for sec in ("00", "01"):
        for domain, n_train in (("source", 10), ("target", 3)):
            for k in range(n_train):
                write(f"train/section_{sec}_{domain}_train_normal_{k:04d}_a.wav", False)
            for label in ("normal", "anomaly"):
                for k in range(4):
                    write(f"test/section_{sec}_{domain}_test_{label}_{k:04d}_a.wav", label == "anomaly")
    return root


def test_dcase_files_follow_the_task_conventions(dcase_tree, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["run", "--data", str(dcase_tree), "--out", str(out), "--method", "autoencoder", "--epochs", "2", "--format", "dcase", "-q"])
    assert e.value.code == 0, capsys.readouterr().err
    d = out / "dcase"
    scores = {}
    for sec in ("00", "01"):
        rows = list(csv.reader(open(d / f"anomaly_score_fan_section_{sec}_test.csv")))
        decisions = list(csv.reader(open(d / f"decision_result_fan_section_{sec}_test.csv")))
        assert rows and all(len(r) == 2 and "/" not in r[0] and r[0].startswith(f"section_{sec}_") for r in rows)
        assert [r[0] for r in decisions] == [r[0] for r in rows] and {r[1] for r in decisions} <= {"0", "1"}
        scores[sec] = {r[0]: float(r[1]) for r in rows}
    # a DCASE tree runs on its own split by default: every official test clip is in the files
    assert all(len(scores[sec]) == 16 for sec in scores)
    lines = list(csv.reader(open(d / "result.csv")))
    assert lines[0] == ["fan"] and lines[1][:5] == ["section", "AUC (all)", "AUC (source)", "AUC (target)", "pAUC"]
    by = {r[0]: r for r in lines if r}
    # AUC (source) of section 00 recomputed from the written scores: source normals against all anomalies
    s00 = scores["00"]
    src = [n for n in s00 if "_source_" in n or "_anomaly_" in n]
    want = auc([int("_anomaly_" in n) for n in src], [s00[n] for n in src])
    assert float(by["00"][2]) == pytest.approx(want, abs=1e-6)
    want_p = pauc([int("_anomaly_" in n) for n in s00], list(s00.values()))
    assert float(by["00"][4]) == pytest.approx(want_p, abs=1e-6)
    assert "arithmetic mean" in by and "harmonic mean" in by and 0 <= float(by["official score"][2]) <= 1
    assert "official score ci95" in by
