"""humwatch export: a monitor's network as ONNX, scored by ONNX Runtime (without PyTorch too), sealed
like any monitor; int8 quantisation keeps the AUC."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_AST, TINY_IDNET, TINY_RX

import humwatch
from humwatch.calibrate import fit_monitor
from humwatch.errors import ConfigError
from humwatch.export import TOLERANCE, export_monitor
from humwatch.metrics import auc
from humwatch.monitor import MonitorError, load_monitor

SCORE_TOLERANCE = 1e-3
"""ONNX Runtime (fp32) scores equal PyTorch's within this, relative to the largest |score|. Looser than
the network's own :data:`TOLERANCE` (1e-4 of its outputs): a kNN or LOF score is a distance between
nearly equal embeddings, so the embeddings' float rounding weighs more in it."""

MONITORS = {
    "ast-knn": ("embed-detect", {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST, "detector": "knn"}),
    "resnext-lofvote": (
        "embed-detect",
        {
            "backbone": "resnext101_32x8d",
            "weights": "none",
            "backbone_config": TINY_RX,
            "detector": "lof-vote",
            "detector_params": {"n_neighbors": 4},
        },
    ),
    "autoencoder": ("autoencoder", {"epochs": 20}),
    "finetune": ("finetune", {"backbone": "resnext101_32x8d", "weights": "none", "backbone_config": TINY_RX}),
    "features-mahalanobis": ("embed-detect", {"backbone": "features", "detector": "mahalanobis", "standardize": True}),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The built-in generator's fan at 6 dB: anomalies the trained autoencoder finds, but not all of them."""
    from helpers import fan_train_test

    return fan_train_test(tmp_path_factory.mktemp("export"), train_anomalous=6)  # anomalies: for finetune only


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """name -> (monitor folder, exported folder) for every monitor of MONITORS."""
    train, _, _ = data
    root = tmp_path_factory.mktemp("monitors")
    out = {}
    for name, (method, settings) in MONITORS.items():
        mon, _ = fit_monitor(train, method, settings, progress=False, false_alarm_rate=0.2, threshold_method="percentile")
        mon.save(root / name)
        export_monitor(root / name, root / f"{name}.onnx")
        out[name] = (root / name, root / f"{name}.onnx")
    return out


def _scores(folder, clips, runtime):
    kept, scores, _ = load_monitor(folder, runtime=runtime).score_clips(clips, progress=False)
    assert len(kept) == len(clips)
    return scores


@pytest.mark.parametrize("name", sorted(MONITORS))
def test_onnx_scores_equal_torch_scores(exported, data, name):
    _, test, _ = data
    mon, exp = exported[name]
    doc = json.loads((exp / "export.json").read_text())
    assert doc["precision"] == "fp32" and doc["check"]["fp32_relative_error"] <= TOLERANCE
    assert doc["output"] == ("embedding" if MONITORS[name][0] == "embed-detect" else "score")
    onnx_mon = load_monitor(exp, runtime="onnx")
    assert onnx_mon.method.backend == "onnx" and onnx_mon.threshold == load_monitor(mon).threshold
    want = load_monitor(mon).method.readings(test)
    got = onnx_mon.method.readings(test)
    assert sorted(got) == sorted(want)  # lof-vote's second reading (votes) comes through too
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=SCORE_TOLERANCE * np.abs(want[key]).max())
    np.testing.assert_allclose(_scores(exp, test, "torch"), want["score"], rtol=1e-6)  # still a monitor PyTorch runs


@pytest.mark.parametrize(
    "method,settings",
    [
        ("idnet", {**TINY_IDNET, "per_section": True}),
        ("aux-finetune", {"backbone": "resnext101_32x8d", "weights": "none", "backbone_config": TINY_RX, "epochs": 1, "outlier_clips": 1}),
    ],
)
def test_trained_id_networks_export_and_score_as_with_torch(data, tmp_path, method, settings):
    """The ID network trained from scratch (and a backbone fine-tuned on the ID task): ONNX embeddings
    scored by the saved detector(s) (here one per section) give the torch monitor's scores."""
    from dataclasses import replace

    train, test, _ = data
    mon, _ = fit_monitor(train[:14], method, settings, folds=2, progress=False, false_alarm_rate=0.2, threshold_method="percentile")
    mon.save(tmp_path / "m")
    doc = export_monitor(tmp_path / "m", tmp_path / "x")
    assert doc["output"] == "embedding" and doc["detector_state"] == "scorer" and doc["method"] == method
    want = load_monitor(tmp_path / "m").method.readings(test)["score"]
    got = load_monitor(tmp_path / "x", runtime="onnx").method.readings(test)
    assert sorted(got) == ["score"]
    np.testing.assert_allclose(got["score"], want, rtol=0, atol=SCORE_TOLERANCE * np.abs(want).max())
    m = load_monitor(tmp_path / "m").method
    m.settings = replace(m.settings, score="classifier")
    with pytest.raises(ConfigError, match="score=classifier cannot be exported"):
        m.export_network()


def test_fusions_are_refused_in_one_line():
    from humwatch.methods import create_method

    m = create_method("embed-fusion", {"backbones": ["features", {"backbone": "features", "backbone_config": {"n_mels": 32}}]})
    with pytest.raises(ConfigError, match="method embed-fusion cannot be exported to ONNX"):
        m.export_network()


def test_int8_keeps_the_auc_within_0_01(exported, data, tmp_path):
    """On the trained autoencoder. (A random-init network is no test of int8: its embeddings of
    different clips differ by about 1 % of their size, as much as int8 rounding moves them.)"""
    _, test, _ = data
    mon, exp = exported["autoencoder"]
    export_monitor(mon, tmp_path / "int8", int8=True)
    doc = json.loads((tmp_path / "int8" / "export.json").read_text())
    assert doc["precision"] == "int8" and 0 < doc["check"]["int8_relative_error"] < 0.05
    labels = np.array([c.label for c in test])
    s32, s8 = _scores(exp, test, "onnx"), _scores(tmp_path / "int8", test, "onnx")
    assert not np.array_equal(s8, s32)  # int8 did change the network
    a32, a8 = auc(labels, s32), auc(labels, s8)
    assert 0.6 < a32 < 1.0, a32  # generated data the autoencoder finds hard enough to rank imperfectly
    assert abs(a8 - a32) <= 0.01, (a32, a8)
    assert (tmp_path / "int8" / "onnx" / "model.onnx").stat().st_size < (exp / "onnx" / "model.onnx").stat().st_size


def test_an_exported_monitor_is_sealed(exported, tmp_path):
    _, exp = exported["autoencoder"]
    for change in ("model", "added", "export"):
        d = tmp_path / change
        shutil.copytree(exp, d)
        if change == "model":
            b = bytearray((d / "onnx" / "model.onnx").read_bytes())
            b[len(b) // 2] ^= 1
            (d / "onnx" / "model.onnx").write_bytes(bytes(b))
        elif change == "added":
            (d / "onnx" / "other.onnx").write_bytes(b"x")
        else:
            doc = json.loads((d / "export.json").read_text())
            (d / "export.json").write_text(json.dumps({**doc, "batch_size": 2}))
        with pytest.raises(MonitorError) as e:
            load_monitor(d, runtime="onnx")
        assert "\n" not in str(e.value) and ("checksum" in str(e.value) or "not listed" in str(e.value))
    # a consistent but wrong export.json (manifest rewritten) is refused by its schema check
    from humwatch.io import write_manifest

    d = tmp_path / "schema"
    shutil.copytree(exp, d)
    doc = json.loads((d / "export.json").read_text())
    (d / "export.json").write_text(json.dumps({**doc, "model": "../../elsewhere.onnx"}))
    write_manifest(d)
    with pytest.raises(MonitorError, match="is not a file inside the monitor"):
        load_monitor(d, runtime="onnx")


def test_bad_requests_are_one_line_errors(exported, tmp_path):
    mon, exp = exported["autoencoder"]
    with pytest.raises(ConfigError, match="not an exported monitor"):
        load_monitor(mon, runtime="onnx")
    with pytest.raises(ConfigError, match="--weights does not apply to the onnx runtime"):
        load_monitor(exp, weights="none", runtime="onnx")
    with pytest.raises(ConfigError, match="holds files; pass --overwrite"):
        export_monitor(mon, exp)
    with pytest.raises(ConfigError, match="not a monitor folder"):
        export_monitor(mon / "method", tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown export format"):
        export_monitor(mon, tmp_path / "x", fmt="tflite")
    assert not (tmp_path / "x").exists()


def test_cli_export_and_score_with_onnx(exported, data, tmp_path, capsys):
    from humwatch.cli import main

    _, _, root = data
    mon, _ = exported["ast-knn"]
    with pytest.raises(SystemExit) as e:
        main(["export", str(mon), "--format", "onnx", "--out", str(tmp_path / "exp"), "--int8"])
    assert e.value.code == 0 and "exported embed-detect (int8" in capsys.readouterr().out
    folder = root / "test" / "6dB_fan" / "fan" / "id_00" / "abnormal"
    for runtime in ("onnx", "torch"):
        with pytest.raises(SystemExit) as e:
            main(["score", str(tmp_path / "exp"), str(folder), "--runtime", runtime, "-q", "--out", str(tmp_path / f"{runtime}.csv")])
        assert e.value.code in (0, 1)
    assert len((tmp_path / "onnx.csv").read_text().splitlines()) == 13


def _torchless_site(tmp_path) -> Path:
    """This interpreter's site-packages without PyTorch (symlinks), as on a small device."""
    site = tmp_path / "site"
    site.mkdir()
    for p in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if p.name.lower().startswith(("torch", "functorch", "torchgen", "torchvision", "_distutils_hack", "__editable__")):
            continue
        (site / p.name).symlink_to(p)
    return site


def test_score_runs_without_pytorch(exported, data, tmp_path):
    _, test, root = data
    _, exp = exported["ast-knn"]
    src = Path(humwatch.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{_torchless_site(tmp_path)}", "HUMWATCH_PROGRESS": "0"}

    def python(*args):
        return subprocess.run([sys.executable, "-S", *args], env=env, capture_output=True, text=True, timeout=300)

    assert python("-c", "import torch").returncode != 0  # really no PyTorch there
    folder = root / "test" / "6dB_fan" / "fan" / "id_00"
    r = python(
        "-m", "humwatch.cli", "score", str(exp), str(folder / "abnormal"), str(folder / "normal"), "-q", "--out", str(tmp_path / "s.csv")
    )
    assert r.returncode in (0, 1), r.stderr
    assert "torch" not in r.stderr.lower()
    got = {line.split(",")[0]: float(line.split(",")[1]) for line in (tmp_path / "s.csv").read_text().splitlines()[1:]}
    want = dict(zip((c.path for c in test), _scores(exp, test, "onnx")))
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose([got[k] for k in sorted(got)], [want[k] for k in sorted(got)], rtol=1e-5)
    r = python("-m", "humwatch.cli", "score", str(exported["ast-knn"][0]), str(folder / "abnormal"), "-q")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "PyTorch is not installed" in r.stderr
