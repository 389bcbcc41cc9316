"""The monitor: fit on healthy clips, save, load, score; and its refusals."""

import csv
import json

import numpy as np
import pytest

from asdkit.cli import main
from asdkit.data import load_dataset
from asdkit.monitor import Monitor, MonitorError, fit_monitor
from helpers import make_mimii_tree

TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_length=128)
TINY_CNN = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_mimii_tree(tmp_path_factory.mktemp("mon"), machines=("fan",), ids=("00",), n_normal=30, n_anomalous=4)


@pytest.fixture(scope="module")
def fitted(tree, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    clips = load_dataset(tree)
    mon, summary = fit_monitor(clips, "embed-detect", {"backbone": "ast", "detector": "knn", "weights": "none",
                                                       "backbone_config": TINY_AST},
                               false_alarm_rate=0.2, threshold_method="percentile", cache_dir=cache, progress=False)
    return mon, summary, clips, cache


def test_fit_uses_normal_clips_and_sets_threshold_from_validation(fitted):
    mon, summary, clips, _ = fitted
    assert summary["n_anomalous_ignored"] == 4
    assert summary["n_train"] + summary["n_val"] == 30 and summary["n_val"] >= 1
    assert summary["random_init"] and "RANDOM INIT" in summary["weights"]
    assert np.isfinite(mon.threshold)


def test_save_load_round_trip_scores_identically(fitted, tmp_path):
    mon, _, clips, cache = fitted
    mon.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m/monitor.json").read_text())
    assert doc["asdkit_version"] and doc["random_init"] is True and doc["method"] == "embed-detect"
    assert doc["threshold_rule"]["method"] == "percentile" and doc["threshold_rule"]["false_alarm_rate"] == 0.2
    assert not list((tmp_path / "m").glob("*.pkl"))
    back = Monitor.load(tmp_path / "m")
    _, a, _ = mon.score_clips(clips, progress=False, cache_dir=cache)
    _, b, _ = back.score_clips(clips, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert back.threshold == mon.threshold


def test_refuses_what_it_cannot_trust(fitted, tmp_path):
    mon, *_ = fitted
    mon.save(tmp_path / "m")
    with pytest.raises(MonitorError, match="no such monitor"):
        Monitor.load(tmp_path / "nothing")
    (tmp_path / "m/method/detector.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(MonitorError, match="checksum"):
        Monitor.load(tmp_path / "m")
    mon.save(tmp_path / "m2")
    (tmp_path / "m2/method/detector.safetensors").unlink()
    with pytest.raises(MonitorError, match="missing"):
        Monitor.load(tmp_path / "m2")
    # a changed field (here: another embedding size) is caught by the manifest ...
    mon.save(tmp_path / "m3")
    path = tmp_path / "m3/method/method.json"
    doc = json.loads(path.read_text())
    doc["settings"]["backbone_config"] = {**TINY_AST, "hidden_size": 48}
    path.write_text(json.dumps(doc))
    with pytest.raises(MonitorError, match="checksum"):
        Monitor.load(tmp_path / "m3")
    # ... and, were the manifest rewritten to match, by the method's own checks
    from asdkit.io import write_manifest

    write_manifest(tmp_path / "m3/method")
    write_manifest(tmp_path / "m3")
    with pytest.raises(MonitorError, match="48-d"):
        Monitor.load(tmp_path / "m3")
    mon.save(tmp_path / "m4")
    path = tmp_path / "m4/method/method.json"
    doc = json.loads(path.read_text())
    doc["state"]["arrays"] = {k: [1, 1] for k in doc["state"]["arrays"]}
    path.write_text(json.dumps(doc))
    write_manifest(tmp_path / "m4/method")
    write_manifest(tmp_path / "m4")
    with pytest.raises(MonitorError, match="shapes"):
        Monitor.load(tmp_path / "m4")
    (tmp_path / "m5").mkdir()
    (tmp_path / "m5/monitor.json").write_text("{not json")
    write_manifest(tmp_path / "m5")
    with pytest.raises(MonitorError, match="damaged"):
        Monitor.load(tmp_path / "m5")


@pytest.mark.parametrize("method,settings", [
    ("autoencoder", {"epochs": 3}),
    ("embed-detect", {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST, "detector": "lof"}),
    ("finetune", {"backbone": "resnext101_32x8d", "weights": "none", "backbone_config": TINY_CNN, "epochs": 1}),
])
def test_cli_fit_with_every_method_gives_a_monitor_score_loads(tree, tmp_path, method, settings, capsys):
    """`asdkit fit --method NAME` for each method; `asdkit score` loads the monitor and scores."""
    argv = ["fit", "--data", str(tree), "--out", str(tmp_path / "mon"), "--method", method, "-q",
            "--false-alarm-rate", "0.2", "--threshold-method", "percentile", "--cache", str(tmp_path / "cache")]
    for k, v in settings.items():
        argv += [f"--{k.replace('_', '-')}", json.dumps(v) if isinstance(v, dict) else str(v)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "mon/monitor.json").read_text())
    assert doc["method"] == method and np.isfinite(doc["threshold"])
    files = sorted((tree / "6dB_fan/fan/id_00").rglob("*.wav"))[:3]
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "mon"), *map(str, files), "--out", str(tmp_path / "s.csv"), "-q"])
    assert e.value.code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert all(np.isfinite(float(r["score"])) and float(r["threshold"]) == pytest.approx(doc["threshold"], rel=1e-5)
               for r in rows)


def test_cli_fit_and_score(tree, tmp_path, capsys):
    cfg = tmp_path / "cache"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data", str(tree), "--out", str(tmp_path / "mon"), "--backbone", "resnext101_32x8d",
              "--weights", "none", "--detector", "mahalanobis", "--cache", str(cfg), "-q",
              "--backbone-config", json.dumps(TINY_CNN)])
    assert e.value.code == 0, capsys.readouterr().err
    assert "RANDOM INIT" in capsys.readouterr().out
    files = sorted((tree / "6dB_fan/fan/id_00/abnormal").glob("*.wav"))[:2]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF????WAVEjunk")
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "mon"), *map(str, files), str(bad), "--out", str(tmp_path / "s.csv"), "--cache", str(cfg), "-q"])
    assert e.value.code == 2 and "bad.wav" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "mon"), *map(str, files), str(bad), "--skip-bad", "--out", str(tmp_path / "s.csv"), "--cache", str(cfg), "-q"])
    assert e.value.code == 0
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert set(rows[0]) == {"file", "score", "threshold", "decision"}
    assert {r["decision"] for r in rows} <= {"normal", "anomalous"}
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "nothing"), str(files[0])])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data", str(tree), "--out", str(tmp_path / "x"), "--backbone-config", "[1]"])
    assert e.value.code == 2 and "JSON object" in capsys.readouterr().err


def test_fit_needs_enough_normal_clips(tree):
    clips = load_dataset(tree)[:5]
    from asdkit.errors import DatasetError

    with pytest.raises(DatasetError, match="at least 10"):
        fit_monitor(clips, "embed-detect", {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST}, progress=False)
