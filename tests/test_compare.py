"""humwatch compare: one split, one run per method, a leaderboard and a figure; resumable; fusion
methods checked against the method they fuse."""

import json

import numpy as np
import pytest
from helpers import make_mimii_tree

from humwatch.errors import ConfigError

FEATURES = "embed-detect:backbone=features,detector=mahalanobis,standardize=true"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_mimii_tree(
        tmp_path_factory.mktemp("cmp"), machines=("fan", "pump"), ids=("00", "02"), n_normal=10, n_anomalous=4, seconds=2.0
    )


def test_method_lists_split_where_a_method_name_starts(monkeypatch):
    from humwatch.methods import method_settings
    from humwatch.methods.spec import split_method_list

    got = split_method_list([f"autoencoder,{FEATURES},idnet:epochs=2", "k=embed-fusion:backbones=[features, ast]"])
    assert got == ["autoencoder", FEATURES, "idnet:epochs=2", "k=embed-fusion:backbones=[features, ast]"]
    # a score fusion's inline member list is split by YAML at every comma and joined back the same way
    from humwatch.methods.spec import parse_spec

    sp = parse_spec(f"score-fusion:members=[{FEATURES}, idnet:epochs=2],how=zscore")
    assert [m.method for m in method_settings("score-fusion", sp.settings).specs()] == ["embed-detect", "idnet"]


def test_compare_writes_a_leaderboard_and_figure_and_reuses_finished_methods(tree, tmp_path):
    from PIL import Image

    from humwatch.compare import compare

    out = tmp_path / "cmp"
    specs = [FEATURES, "ae=autoencoder:epochs=1", "broken=embed-detect:backbone=ast,weights=/no/such/weights"]
    cmp = compare(tree, specs, out, cache_dir=tmp_path / "cache", isolate=False, progress=False)
    by = {r["name"]: r for r in cmp.records}
    assert by["broken"]["status"] == "failed" and "/no/such/weights" in by["broken"]["reason"]
    ok = by["features-mahalanobis"]
    assert ok["status"] == "ok" and set(ok["by_type"]) == {"fan", "pump"} and 0 <= ok["official_score"] <= 1
    assert ok["mean_auc"] > 0.9  # bursts are easy for per-band statistics
    doc = json.loads((out / "compare.json").read_text())
    assert [m["name"] for m in doc["methods"]][-1] == "broken"  # failed methods rank last
    md = (out / "compare.md").read_text()
    assert "features-mahalanobis" in md and "failed" in md and "| rank |" in md
    assert (out / "compare.csv").read_text().splitlines()[0].startswith("rank,name,method,status,official_score")
    w, h = Image.open(out / "compare.png").size
    assert w >= 800 and h >= 600
    # the same split for every method: the test clips agree
    tests = [{r["file"] for r in _scores(out / "runs" / n)} for n in ("features-mahalanobis", "ae")]
    assert tests[0] == tests[1]
    again = compare(tree, specs[:2], out, cache_dir=tmp_path / "cache", isolate=False, progress=False)
    assert all(r["reused"] for r in again.records)
    with pytest.raises(ConfigError, match="other data"):
        compare(tree, specs[:1], out, seed=3, isolate=False, progress=False)


def _scores(run_dir):
    import csv

    with open(run_dir / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_settings_of_every_method_are_checked_before_any_work(tree, tmp_path):
    from humwatch.compare import compare

    with pytest.raises(ConfigError, match="method idnet: idnet: unknown setting"):
        compare(tree, ["autoencoder", "idnet:epoch=3"], tmp_path / "x", isolate=False, progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="named 'autoencoder'"):
        compare(tree, ["autoencoder", "autoencoder:epochs=2"], tmp_path / "x", isolate=False, progress=False)


def test_fusing_a_backbone_or_a_method_with_itself_gives_its_own_ranking(tree, tmp_path):
    from humwatch.data import load_dataset
    from humwatch.methods import Context, create_method
    from humwatch.runtime import Runtime, active

    clips = load_dataset(tree, machines=["fan"])
    train, test = [c for c in clips if not c.is_anomalous][:12], [c for c in clips if c.is_anomalous or c in clips[12:]]
    ctx = Context()
    with active(Runtime(progress=False, cache_dir=str(tmp_path / "cache"))):  # every call below runs with it
        single = create_method("embed-detect", {"backbone": "features", "detector": "knn", "standardize": True}, ctx).fit(train)
        twice = create_method("embed-fusion", {"backbones": ["features", "features"], "detector": "knn"}, ctx).fit(train)
        np.testing.assert_allclose(twice.score(test), single.score(test), rtol=1e-4, atol=1e-6)
        member = {"method": "embed-detect", "settings": {"backbone": "features", "detector": "knn", "standardize": True}}
        fused = create_method("score-fusion", {"members": [member, member], "how": "zscore"}, ctx).fit(train, val=train[:6])
        s, f = single.score(test), fused.score(test)
        assert (np.argsort(s, kind="stable") == np.argsort(f, kind="stable")).all()
        assert "in-sample" not in fused.info()["reference"]
        fused.save(tmp_path / "sf")
        from humwatch.methods import load_method

        np.testing.assert_allclose(load_method(tmp_path / "sf", ctx).score(test), f)


def test_compare_command_line(tree, tmp_path, capsys):
    from humwatch.cli import main

    with pytest.raises(SystemExit) as e:
        main(
            [
                "compare",
                "--data",
                str(tree),
                "--out",
                str(tmp_path / "c"),
                "--machines",
                "fan",
                "--in-process",
                "--methods",
                f"{FEATURES},ae=autoencoder:epochs=1",
                "-q",
            ]
        )
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "features-mahalanobis" in out and "leaderboard in" in out
    assert (tmp_path / "c" / "compare.md").is_file()
    # not a terminal: plain tab-separated rows, one per method, numbers in full (no truncated box cells)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank\tmethod\t"))
    rows = [line.split("\t") for line in lines[header + 1 : header + 3]]
    assert sorted(r[1] for r in rows) == ["ae", "features-mahalanobis"]
    assert all(0.0 <= float(r[3]) <= 1.0 for r in rows), rows  # mean AUC


def test_many_methods_are_drawn_as_a_table_of_cells(tmp_path):
    from PIL import Image

    from humwatch.compare_report import BARS_UP_TO, draw_figure

    recs = [
        {
            "name": f"m{i}",
            "status": "ok",
            "random_init": i == 0,
            "mean_auc": 0.5 + i / 20,
            "mean_pauc": 0.6,
            "official_score": 0.5 + i / 20,
            "by_type": {"fan": {"auc": 0.7, "pauc": None}, "pump": {"auc": 0.9, "pauc": 0.8}},
        }
        for i in range(BARS_UP_TO + 3)
    ]
    w, h = Image.open(draw_figure(recs, {"title": "t"}, tmp_path / "f.png")).size
    assert w > h > 300  # one row per method, readable at its own size
