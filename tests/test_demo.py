"""`humwatch demo`: the whole study on generated data, at the smallest size that fills every cell."""

import json

import pytest

from humwatch.cli import main


def test_demo_fills_table3_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(out), "--normal", "8", "--anomalous", "2", "--epochs", "2", "-q"])
    printed = capsys.readouterr().out
    assert e.value.code == 0, printed
    doc = json.loads((out / "table3.json").read_text())
    cells = doc["cells"]
    assert len(cells) == 25 and all(c["status"] == "ok" for c in cells), [c.get("reason") for c in cells]
    assert {c["row"] for c in cells} == {"autoencoder", "cnn-supervised", "ast-supervised", "cnn-lof", "ast-lof"}
    assert all(0.0 <= c["auc"] <= 1.0 for c in cells if c["auc"] is not None)
    assert "RANDOM INIT" in (out / "table3.md").read_text() and "Table III" in printed
    assert (out / "explain" / "report.html").is_file()
    assert (out / "data" / "6dB_valve" / "valve" / "id_06" / "abnormal").is_dir()
    ranked = json.loads((out / "compare" / "compare.json").read_text())["methods"]
    assert len(ranked) == 3 and all(m["status"] == "ok" for m in ranked), [m.get("reason") for m in ranked]
    assert all(m["peak_rss_mb"] > 100 for m in ranked)  # each method in its own process, its memory measured
    assert (out / "compare" / "compare.png").is_file() and "features-mahalanobis" in printed
