"""The monitor: fit on healthy clips, save, load, score; and its refusals."""

import csv
import json

import numpy as np
import pytest
from helpers import make_mimii_tree

from humwatch.calibrate import fit_monitor
from humwatch.cli import main
from humwatch.data import load_dataset
from humwatch.errors import DamagedFileError
from humwatch.monitor import Monitor, MonitorError

TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_length=128)
TINY_CNN = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_mimii_tree(tmp_path_factory.mktemp("mon"), machines=("fan",), ids=("00",), n_normal=30, n_anomalous=4)


@pytest.fixture(scope="module")
def fitted(tree, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    clips = load_dataset(tree)
    mon, summary = fit_monitor(
        clips,
        "embed-detect",
        {"backbone": "ast", "detector": "knn", "weights": "none", "backbone_config": TINY_AST},
        false_alarm_rate=0.2,
        threshold_method="percentile",
        cache_dir=cache,
        progress=False,
    )
    return mon, summary, clips, cache


def test_fit_calibrates_on_every_normal_clip_and_learns_from_all_of_them(fitted):
    mon, summary, clips, _ = fitted
    # 30 normal 10 s clips: every one gets an out-of-fold score, and the final detector learns from all
    assert summary["n_recordings"] == 30 and summary["n_calibration"] == 30 and summary["n_train"] == 30
    assert summary["folds"] == 5 and summary["n_anomalous"] == 4
    assert 0.0 <= summary["anomalous_auc"] <= 1.0  # the anomalous clips are only reported on
    assert summary["random_init"] and "RANDOM INIT" in summary["weights"]
    assert np.isfinite(mon.threshold) and summary["oof_alarm_share"] <= 0.25
    assert mon.method.scorer_.summary()["*"]["n_train"] == 30


def test_save_load_round_trip_scores_identically(fitted, tmp_path):
    mon, _, clips, cache = fitted
    mon.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m/monitor.json").read_text())
    assert doc["humwatch_version"] and doc["random_init"] is True and doc["method"] == "embed-detect"
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
    from humwatch.io import write_manifest

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
    with pytest.raises(DamagedFileError, match="damaged"):  # one kind for a damaged file, wherever it is read
        Monitor.load(tmp_path / "m5")


def test_a_monitor_written_by_another_program_is_refused_in_one_line(fitted, tmp_path, capsys):
    """A folder whose manifest (or monitor.json) names another program's format, e.g. one written
    under the project's former name, is refused with a line that says what it is."""
    mon, *_ = fitted
    mon.save(tmp_path / "m")
    man = tmp_path / "m/manifest.json"
    doc = json.loads(man.read_text())
    man.write_text(json.dumps({**doc, "format": "otherkit.manifest/1"}))
    with pytest.raises(MonitorError, match=r"written by another program \('otherkit'.*not by humwatch"):
        Monitor.load(tmp_path / "m")
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "m"), str(tmp_path / "nothing.wav")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "otherkit" in err and len(err.splitlines()) == 1
    # a monitor.json of another program's format, the manifest sealed over it
    mon.save(tmp_path / "m2")
    mj = tmp_path / "m2/monitor.json"
    mj.write_text(json.dumps({**json.loads(mj.read_text()), "format": "otherkit.monitor"}))
    from humwatch.io import write_manifest

    write_manifest(tmp_path / "m2")
    with pytest.raises(MonitorError, match="written by another program"):
        Monitor.load(tmp_path / "m2")


@pytest.mark.parametrize(
    "method,settings",
    [
        ("autoencoder", {"epochs": 3}),
        ("embed-detect", {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST, "detector": "lof"}),
        ("finetune", {"backbone": "resnext101_32x8d", "weights": "none", "backbone_config": TINY_CNN, "epochs": 3}),
    ],
)
def test_cli_fit_with_every_method_gives_a_monitor_score_loads(tree, tmp_path, method, settings, capsys):
    """`humwatch fit --method NAME` for each method; `humwatch score` loads the monitor and scores."""
    argv = [
        "fit",
        "--data",
        str(tree),
        "--out",
        str(tmp_path / "mon"),
        "--method",
        method,
        "-q",
        "--folds",
        "3",
        "--false-alarm-rate",
        "0.2",
        "--threshold-method",
        "percentile",
        "--cache",
        str(tmp_path / "cache"),
    ]
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
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert e.value.code == (1 if any(r["decision"] == "anomalous" for r in rows) else 0), capsys.readouterr().err
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert all(np.isfinite(float(r["score"])) and float(r["threshold"]) == pytest.approx(doc["threshold"], rel=1e-5) for r in rows)


def test_cli_fit_and_score(tree, tmp_path, capsys):
    cfg = tmp_path / "cache"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                "--data",
                str(tree),
                "--out",
                str(tmp_path / "mon"),
                "--backbone",
                "resnext101_32x8d",
                "--weights",
                "none",
                "--detector",
                "mahalanobis",
                "--cache",
                str(cfg),
                "-q",
                "--backbone-config",
                json.dumps(TINY_CNN),
            ]
        )
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
        main(
            [
                "score",
                str(tmp_path / "mon"),
                *map(str, files),
                str(bad),
                "--skip-bad",
                "--out",
                str(tmp_path / "s.csv"),
                "--cache",
                str(cfg),
                "-q",
            ]
        )
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert e.value.code == (1 if any(r["decision"] == "anomalous" for r in rows) else 0)
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert set(rows[0]) == {"file", "score", "threshold", "decision"}
    assert {r["decision"] for r in rows} <= {"normal", "anomalous"}
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "nothing"), str(files[0])])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data", str(tree), "--out", str(tmp_path / "x"), "--backbone-config", "[1]"])
    assert e.value.code == 2 and "JSON object" in capsys.readouterr().err


def test_fit_needs_normal_clips(tree):
    anomalous = [c for c in load_dataset(tree) if c.label == 1]
    from humwatch.errors import DatasetError

    with pytest.raises(DatasetError, match="needs normal .* found none"):
        fit_monitor(anomalous, "embed-detect", {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST}, progress=False)


# ------------------------------------------------------------------ a monitor that can always alarm


def _tone_folder(root, n, seconds, sr=16000, seed=0, f0=440.0):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        t = np.arange(int(seconds[k % len(seconds)] * sr[k % len(sr)] if isinstance(sr, tuple) else seconds[k % len(seconds)] * sr))
        rate = sr[k % len(sr)] if isinstance(sr, tuple) else sr
        y = 0.3 * np.sin(2 * np.pi * (f0 + rng.normal(0, 2)) * t / rate) + 0.01 * rng.standard_normal(t.size)
        p = root / f"rec{k:02d}.wav"
        sf.write(str(p), y.astype(np.float32), rate)
        paths.append(p)
    return paths


def test_the_case_of_few_short_clips_alarms_on_a_clearly_anomalous_clip(tmp_path):
    """The issue's case: 24 healthy 4-second clips with lof-vote. Its old score had a ceiling (votes +
    lof/(1+lof) < 5) below the threshold, so nothing could alarm; now it alarms or is refused."""
    import soundfile as sf

    _tone_folder(tmp_path / "healthy", 24, seconds=[4.0])
    clips = load_dataset(tmp_path / "healthy")
    assert len(clips) == 24 and all(c.label == 0 for c in clips)
    mon, summary = fit_monitor(
        clips,
        "embed-detect",
        {"backbone": "resnext101_32x8d", "weights": "none", "backbone_config": TINY_CNN, "detector": "lof-vote"},
        progress=False,
    )
    rng = np.random.default_rng(5)
    loud = tmp_path / "broken.wav"
    sf.write(str(loud), np.clip(rng.standard_normal(16000 * 4) * 0.5, -1, 1).astype(np.float32), 16000)
    normal = tmp_path / "healthy" / "rec03.wav"
    from humwatch.data.clips import Clip

    kept, scores, _ = mon.score_clips([Clip(str(loud), "x", "x", 0), Clip(str(normal), "x", "x", 0)], progress=False)
    assert mon.decide(scores).tolist() == [True, False]
    assert np.max(mon.method.far_scores()) > mon.threshold


def test_too_few_normal_clips_is_a_clear_error_before_any_embedding(tmp_path, monkeypatch):
    import humwatch.embed

    _tone_folder(tmp_path / "few", 6, seconds=[10.0])
    monkeypatch.setattr(humwatch.embed, "embed_clips", lambda *a, **k: pytest.fail("embedded before checking"))
    clips = load_dataset(tmp_path / "few")
    with pytest.raises(Exception, match=r"needs at least 20 normal windows of 10 s, these 6 recording\(s\) give 6"):
        fit_monitor(
            clips,
            "embed-detect",
            {"weights": "none", "backbone_config": TINY_AST},
            false_alarm_rate=0.05,
            threshold_method="percentile",
            progress=False,
        )
    with pytest.raises(Exception, match="each of the 5 calibration folds trains on 4 normal windows, it needs at least 5"):
        fit_monitor(
            clips, "embed-detect", {"weights": "none", "backbone_config": TINY_AST, "detector": "lof"}, false_alarm_rate=0.2, progress=False
        )


def test_a_monitor_that_cannot_alarm_is_refused(tmp_path, monkeypatch):
    from humwatch.methods.embed_detect import EmbedDetectMethod

    _tone_folder(tmp_path / "h", 12, seconds=[2.0])
    monkeypatch.setattr(EmbedDetectMethod, "far_scores", lambda self: np.array([0.0]))  # a score with a ceiling
    with pytest.raises(Exception, match="could never alarm"):
        fit_monitor(
            load_dataset(tmp_path / "h"),
            "embed-detect",
            {"weights": "none", "backbone_config": TINY_CNN, "backbone": "resnext101_32x8d", "detector": "knn"},
            progress=False,
        )


def test_mixed_lengths_and_rates_fit_and_score_window_by_window(tmp_path, capsys, caplog):
    """A plain folder of WAVs of 10 s to 60 s at 16 and 44.1 kHz, no normal/ subfolder (shorter ones: tests/test_short_clips.py)."""
    import logging

    import soundfile as sf

    root = tmp_path / "pump_07"
    _tone_folder(root, 10, seconds=[10.0, 12.0, 25.0, 60.0, 15.0], sr=(16000, 44100))
    mon_dir = tmp_path / "mon"
    argv = [
        "fit",
        "--data",
        str(root),
        "--out",
        str(mon_dir),
        "--backbone",
        "resnext101_32x8d",
        "--weights",
        "none",
        "--backbone-config",
        json.dumps(TINY_CNN),
        "--detector",
        "knn",
        "--hop",
        "5",
        "-q",
        "--cache",
        str(tmp_path / "c"),
        "--false-alarm-rate",
        "0.1",
    ]
    with caplog.at_level(logging.WARNING, logger="humwatch"):
        with pytest.raises(SystemExit) as e:
            main(argv)
    assert e.value.code == 0, capsys.readouterr().err
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "padded" not in said and "at 44100 Hz are resampled to 16000 Hz" in said
    out = capsys.readouterr().out
    assert "out-of-fold normal windows" in out and "expected false alarms: 10.0%" in out
    doc = json.loads((mon_dir / "monitor.json").read_text())
    assert doc["hop"] == 5.0 and doc["audio"]["seconds"] == 10.0
    # a 60 s recording with a 10 s burst in the middle: scored per window, the recording's score is the max
    rng = np.random.default_rng(1)
    t = np.arange(60 * 16000) / 16000
    y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)
    y[30 * 16000 : 40 * 16000] += 0.6 * rng.standard_normal(10 * 16000)
    sf.write(str(tmp_path / "long.wav"), np.clip(y, -1, 1).astype(np.float32), 16000)
    with pytest.raises(SystemExit) as e:
        main(["score", str(mon_dir), str(tmp_path / "long.wav"), "--windows", "--out", "-", "-q"])
    assert e.value.code == 1  # an alarm
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [float(r["start"]) for r in rows] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    worst = max(rows, key=lambda r: float(r["score"]))
    assert 25 <= float(worst["start"]) <= 35 and worst["decision"] == "anomalous"
    assert rows[0]["decision"] == "normal"


def test_score_speaks_to_scripts(fitted, tmp_path, capsys):
    mon, _, clips, cache = fitted
    mon.save(tmp_path / "m")
    normal = [c.path for c in clips if c.label == 0][:3]
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "m"), *normal, "--out", "-", "--json", "-q"])
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert [x["file"] for x in lines] == normal and set(lines[0]) == {"file", "score", "threshold", "decision"}
    assert e.value.code == (1 if any(x["decision"] == "anomalous" for x in lines) else 0)
    assert "┏" not in captured.out and "┃" not in captured.err  # no box-drawn table when not on a terminal
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "m"), str(tmp_path / "missing.wav"), "--out", "-"])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error:")


def test_explain_says_why_a_monitor_alarmed(tmp_path, capsys):
    """`humwatch explain MONITOR CLIP`: one figure and one summary line naming the time and the band."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(10 * sr) / sr
    (tmp_path / "h").mkdir()
    for k in range(12):
        y = 0.3 * np.sin(2 * np.pi * (440 + rng.normal(0, 2)) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(str(tmp_path / "h" / f"r{k:02d}.wav"), y.astype(np.float32), sr)
    t30 = np.arange(30 * sr) / sr
    y = 0.3 * np.sin(2 * np.pi * 440 * t30) + 0.01 * rng.standard_normal(t30.size)
    y[(t30 > 21) & (t30 < 28)] += 0.2 * np.sin(2 * np.pi * 3100 * t30[(t30 > 21) & (t30 < 28)])
    sf.write(str(tmp_path / "suspect.wav"), y.astype(np.float32), sr)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                "--data",
                str(tmp_path / "h"),
                "--out",
                str(tmp_path / "m"),
                "--backbone",
                "resnext101_32x8d",
                "--weights",
                "none",
                "--backbone-config",
                json.dumps(TINY_CNN),
                "--detector",
                "knn",
                "-q",
                "--threshold-method",
                "percentile",
                "--false-alarm-rate",
                "0.1",
                "--cache",
                str(tmp_path / "c"),
            ]
        )
    assert e.value.code == 0, capsys.readouterr().err
    assert (tmp_path / "m" / "reference.safetensors").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["explain", str(tmp_path / "m"), str(tmp_path / "suspect.wav"), "--out", str(tmp_path / "why")])
    assert e.value.code == 0, capsys.readouterr().err
    out = " ".join(capsys.readouterr().out.split())
    assert "ALARM: score" in out and "in 20-30 s" in out
    from humwatch.explain.alarm import explain_alarm
    from humwatch.monitor import Monitor

    res = explain_alarm(Monitor.load(tmp_path / "m"), tmp_path / "suspect.wav")
    assert res.alarm and res.bands[0]["low_hz"] <= 3100 <= res.bands[0]["high_hz"] and res.bands[0]["delta_db"] > 3
    assert [s for s, _ in res.windows] == [0.0, 10.0, 20.0]
    png = (tmp_path / "why" / "suspect_why.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--detector", "knn", "--detector-params", '{"n_neighbours": 3}'], "n_neighbours"),
        (["--detector", "magic"], "detector"),
        (["--epochs", "3"], "--epochs does not apply to --method embed-detect"),
        (["--method", "autoencoder", "--epochs", "0"], "epochs"),
        (["--hop", "20"], "hop must be"),
        (["--folds", "1"], "--folds"),
        (["--false-alarm-rate", "1.5"], "--false-alarm-rate"),
        (["--backbone", "vit"], "backbone"),
    ],
)
def test_fit_checks_every_option_before_reading_audio(tree, tmp_path, monkeypatch, capsys, extra, words):
    import humwatch.audio
    import humwatch.reader

    def boom(*a, **k):
        raise AssertionError("audio was read before the options were checked")

    monkeypatch.setattr(humwatch.reader, "load_audio", boom)
    monkeypatch.setattr(humwatch.audio, "load_audio", boom)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data", str(tree), "--out", str(tmp_path / "m"), "--weights", "none", *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and words in err and "\n" not in err.strip()
    assert not (tmp_path / "m").exists()
