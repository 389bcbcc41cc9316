"""`humwatch run` with the autoencoder baseline, end to end on a generated MIMII-layout tree."""

import csv
import json

import numpy as np
import pytest
from helpers import make_mimii_tree

from humwatch.cli import main
from humwatch.data.clips import read_clips_csv
from humwatch.errors import AudioError, ConfigError
from humwatch.pipeline import RunConfig, run


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_mimii_tree(tmp_path_factory.mktemp("mimii"))


def test_autoencoder_run_writes_every_output(tree, tmp_path):
    out = tmp_path / "run"
    run(RunConfig(data=str(tree), method="autoencoder", settings={"epochs": 8, "batch_size": 256}), out, progress=False)
    for name in (
        "results.json",
        "results.md",
        "scores.csv",
        "split.csv",
        "config.json",
        "models/fan/model.safetensors",
        "models/pump/humwatch_backbone.json",
    ):
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    rows = {(r["machine_type"], r["machine_id"]): r for r in doc["rows"]}
    assert set(rows) == {("fan", "all"), ("fan", "id_00"), ("fan", "id_02"), ("pump", "all"), ("pump", "id_00"), ("pump", "id_02")}
    # 8 normal + 4 anomalous per id; 25 % of each stratum is test: 2 normal + 1 anomalous per id
    assert rows[("fan", "all")]["n_normal"] == 4 and rows[("fan", "all")]["n_anomalous"] == 2
    # impulsive bursts on a steady tone are easy: the baseline must see them
    assert rows[("fan", "all")]["auc"] > 0.9 and rows[("pump", "all")]["auc"] > 0.9
    with open(out / "scores.csv") as f:
        scores = list(csv.DictReader(f))
    assert len(scores) == 12 and {s["split"] for s in scores} == {"test"}
    assert list(scores[0]) == ["file", "machine_type", "machine_id", "label", "split", "score"]
    split = read_clips_csv(out / "split.csv")
    assert len(split) == 48 and {c.split for c in split} == {"train", "val", "test"}
    md = (out / "results.md").read_text()
    assert "| fan" in md and "auc_ci" in md and "Few clips" in md  # every AUC with its interval; 4+2 clips is few
    lo, hi = rows[("fan", "all")]["auc_ci"]
    assert lo <= rows[("fan", "all")]["auc"] <= hi
    assert doc["versions"]["humwatch"] and doc["machine"]["cores"]


def test_saved_split_repeats_the_run(tree, tmp_path):
    a = run(RunConfig(data=str(tree), settings={"epochs": 3}, machines=["fan"]), tmp_path / "a", progress=False)
    b = run(
        RunConfig(data=str(tree), settings={"epochs": 3}, machines=["fan"], split_csv=str(tmp_path / "a" / "split.csv")),
        tmp_path / "b",
        progress=False,
    )
    assert a.scores == b.scores


def test_per_id_trains_one_model_per_id(tree, tmp_path):
    res = run(RunConfig(data=str(tree), settings={"epochs": 3}, machines=["fan"], per_id=True), tmp_path / "r", progress=False)
    assert {r["machine_id"] for r in res.rows} == {"all", "id_00", "id_02"}


def test_bad_file_stops_or_is_skipped(tmp_path):
    tree = make_mimii_tree(tmp_path / "d", machines=("fan",), ids=("00",), n_normal=8, n_anomalous=4)
    bad = tree / "6dB_fan/fan/id_00/normal/00000003.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="00000003.wav"):
        run(RunConfig(data=str(tree), settings={"epochs": 2}), tmp_path / "r1", progress=False)
    res = run(RunConfig(data=str(tree), settings={"epochs": 2}, skip_bad=True), tmp_path / "r2", progress=False)
    assert [p for p, _ in res.skipped] == [str(bad)]
    assert json.loads((tmp_path / "r2/results.json").read_text())["skipped"][0]["file"] == str(bad)


def test_cli_run_and_errors(tree, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--data", str(tree), "--out", str(tmp_path / "c"), "--epochs", "2", "--machines", "pump", "-q"])
    assert e.value.code == 0
    assert (tmp_path / "c/results.md").is_file()
    assert "AUC" in capsys.readouterr().out
    for argv, expect in [
        (["run", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")], "nope"),
        (["run", "--data", str(tree), "--out", str(tmp_path / "x"), "--method", "magic"], "magic"),
        (
            ["run", "--data", str(tree), "--out", str(tmp_path / "x"), "--detector", "knn"],
            "--detector does not apply to --method autoencoder",
        ),
        (["run", "--data", str(tree), "--out", str(tmp_path / "x"), "--method", "embed-detect", "--detector", "magic"], "detector"),
        (["run", "--data", str(tree), "--out", str(tmp_path / "x"), "--set", "nope=1"], "no such setting"),
        (["run", "--data", str(tree), "--out", str(tmp_path / "x"), "--machines", "drill"], "drill"),
        (["run", "--data", str(tree), "--out", str(tmp_path / "x"), "--epochs", "0"], "epochs"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2, argv
        assert err.startswith("error:") and expect in err and "\n" not in err and "Traceback" not in err


def test_cli_features(tree, tmp_path, capsys):
    wav = next((tree / "6dB_fan/fan/id_00/normal").glob("*.wav"))
    for fe, shape in (("ae", (309, 320)), ("cnn", (3, 128, 1251)), ("ast", (1024, 128))):
        with pytest.raises(SystemExit) as e:
            main(["features", str(wav), "--frontend", fe, "--out", str(tmp_path / f"{fe}.npy")])
        assert e.value.code == 0
        assert np.load(tmp_path / f"{fe}.npy").shape == shape
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main(["features", str(empty), "--out", str(tmp_path / "e.npy")])
    assert e.value.code == 2 and "empty file" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()
    with pytest.raises(SystemExit) as e:
        main(["features", str(wav), "--frontend", "mfcc", "--out", str(tmp_path / "m.npy")])
    assert e.value.code == 2


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown method"):
        RunConfig(data="x", method="nope").validate()
    with pytest.raises(ConfigError, match="autoencoder: epochs"):
        RunConfig(data="x", settings={"epochs": 0}).validate()
    with pytest.raises(ConfigError, match="unknown setting.*detector"):
        RunConfig(data="x", settings={"detector": "knn"}).validate()
    with pytest.raises(ConfigError, match="n_neighbours"):  # a detector's parameters are checked before any work
        RunConfig(data="x", method="embed-detect", settings={"detector_params": {"n_neighbours": 3}}).validate()
    cfg = RunConfig(data="x", method="embed-detect", settings={"detector": "knn"})
    cfg.validate()
    assert cfg.settings["backbone"] == "ast" and cfg.settings["detector"] == "knn"  # every setting, saved


def test_embed_detect_run_records_weights_and_embeddings(tree, tmp_path):
    from humwatch.embed import EmbeddingSet

    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_length=128)
    cfg = RunConfig(
        data=str(tree),
        method="embed-detect",
        machines=["fan"],
        cache_dir=str(tmp_path / "cache"),
        settings={"backbone": "ast", "weights": "none", "backbone_config": tiny, "detector": "lof-vote"},
    )
    res = run(cfg, tmp_path / "r", progress=False)
    doc = json.loads((tmp_path / "r/results.json").read_text())
    assert doc["random_init"] is True and "RANDOM INIT" in doc["weights"]
    assert "RANDOM INIT" in (tmp_path / "r/results.md").read_text()
    assert doc["label"] == "ast+lof-vote" and doc["embedding_dim"] == 32
    emb = EmbeddingSet.load_npz(tmp_path / "r/embeddings/ast.npz")
    # normal train clips + all test clips of fan: 2 ids x (5 normal train + 3 test)
    assert emb.X.shape == (16, 32)
    assert {r["machine_id"] for r in res.rows} == {"all", "id_00", "id_02"}
    assert all(0.0 <= r["auc"] <= 1.0 for r in res.rows)
    # lof-vote gives two readings: the continuous score and the study's literal vote count, each with its AUC
    with open(tmp_path / "r/scores.csv") as f:
        scores = list(csv.DictReader(f))
    votes = [float(s["score_votes"]) for s in scores]
    assert set(votes) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    by_score = sorted(scores, key=lambda s: float(s["score"]))
    assert all(float(a["score_votes"]) <= float(b["score_votes"]) for a, b in zip(by_score, by_score[1:]))  # a step of the score
    assert all(0.0 <= r["auc_votes"] <= 1.0 and "pauc_votes" in r for r in res.rows)
    assert "auc_votes" in (tmp_path / "r/results.md").read_text()
