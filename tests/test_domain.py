"""Domain shift on a tiny hand-made DCASE 2022-like tree: the dataset's own split, per-section
detectors with k-means source memory, per-section normalisation, source and target AUCs, attribute
classes, and the offline default of `humwatch fit`."""

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import make_clip


@pytest.fixture(scope="module")
def dcase_tree(tmp_path_factory):
    """fan, sections 00 and 01: 12 source + 3 target training clips each (the target machine runs at
    another speed: its tone is higher), test clips of both domains, anomalies with bursts."""
    root = tmp_path_factory.mktemp("dcase") / "fan"
    rng = np.random.default_rng(0)
    for sec, f0 in (("00", 250.0), ("01", 500.0)):
        for split, dom, label, n in (
            ("train", "source", "normal", 12),
            ("train", "target", "normal", 3),
            ("test", "source", "normal", 4),
            ("test", "target", "normal", 4),
            ("test", "source", "anomaly", 3),
            ("test", "target", "anomaly", 3),
        ):
            d = root / split
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                y = make_clip(rng, label == "anomaly", seconds=2.0, channels=1, f0=f0 * (1.3 if dom == "target" else 1.0))
                sf.write(
                    str(d / f"section_{sec}_{dom}_{split}_{label}_{k:04d}_speed_{'b' if dom == 'target' else 'a'}.wav"),
                    y,
                    16000,
                    subtype="PCM_16",
                )
    return root.parent


def test_per_section_domain_shift_run_reports_source_and_target(dcase_tree, tmp_path):
    from humwatch.pipeline import RunConfig, run

    s = {
        "backbone": "features",
        "detector": "knn",
        "detector_params": {"n_neighbors": 1},
        "per_section": True,
        "source_centres": 4,
        "normalize": True,
    }
    res = run(
        RunConfig(data=str(dcase_tree), method="embed-detect", settings=s, dataset_split=True, save_models=True),
        tmp_path / "run",
        progress=False,
    )
    test = [c for c in res.clips if c.split == "test"]
    assert len(test) == 2 * 14 and {c.domain for c in test} == {"source", "target"}  # DCASE's own test folder
    sec = [r for r in res.rows if r["machine_id"] == "section_00"][0]
    assert {"auc_source", "auc_target", "pauc"} <= set(sec) and min(sec["auc_source"], sec["auc_target"]) > 0.9
    model = json.loads((tmp_path / "run/models/fan/method.json").read_text())["state"]
    mem = {x["key"]: x["n_memory"] for x in model["sections"]}
    targets = {
        f"fan/{m}": sum(c.domain == "target" for c in res.clips if c.split == "train" and c.machine_id == m)
        for m in ("section_00", "section_01")
    }
    assert mem == {k: 4 + n for k, n in targets.items()}  # 4 centres of the source clips + every target clip
    from humwatch.metrics import official_score

    assert 0 < official_score(res.rows) <= 1


def test_attributes_in_dcase_names_become_id_classes(dcase_tree):
    from humwatch.data import load_dataset
    from humwatch.idtrain import id_label

    clips = load_dataset(dcase_tree)
    assert sorted({id_label(c) for c in clips}) == [
        "fan/section_00/speed_a",
        "fan/section_00/speed_b",
        "fan/section_01/speed_a",
        "fan/section_01/speed_b",
    ]
    assert {id_label(c, attributes=False) for c in clips} == {"fan/section_00", "fan/section_01"}


def test_fit_without_method_or_weights_uses_the_weight_free_features(tmp_path, capsys):
    from helpers import make_mimii_tree

    from humwatch.cli import main

    tree = make_mimii_tree(tmp_path / "m", machines=("fan",), ids=("00",), n_normal=10, n_anomalous=3, seconds=2.0)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data", str(tree), "--out", str(tmp_path / "mon"), "--window-seconds", "2", "-q"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "weight-free features backbone" in out and "RANDOM INIT" not in out
    settings = json.loads((tmp_path / "mon/method/method.json").read_text())["settings"]
    assert settings["backbone"] == "features" and settings["detector"] == "knn-ldn"
    # the default monitor alarms on the clearly anomalous clips (exit 1 like grep, every row an alarm)
    abnormal = sorted((tree / "6dB_fan/fan/id_00/abnormal").glob("*.wav"))
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "mon"), *map(str, abnormal), "--out", "-", "--json", "-q"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert e.value.code == 1 and len(rows) == 3
    assert all(r["score"] > r["threshold"] for r in rows), rows
    with pytest.raises(SystemExit):  # an explicit choice stays explicit
        main(["fit", "--data", str(tree), "--out", str(tmp_path / "mon2"), "--backbone", "ast", "-q"])
    assert "weight-free" not in capsys.readouterr().out
