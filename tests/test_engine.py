"""Engines: the local one and Ray (a local Ray with 2 CPUs, started once for this module) give the
same embeddings, the same scores in the same order, and the same skipped files."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_mimii_tree

from humwatch.audio import AudioSettings
from humwatch.engine import ENGINES, LocalEngine, get_engine
from humwatch.engine.ray import RayEngine, _unwrap
from humwatch.errors import AudioError, ConfigError
from humwatch.methods import BackboneSettings, Context
from humwatch.pipeline import RunConfig, run
from humwatch.reader import ClipReader
from humwatch.runtime import Runtime

TINY_AST = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
AUDIO = AudioSettings(seconds=2.0)


@pytest.fixture(scope="module")
def ray_engine():
    engine = RayEngine(init={"num_cpus": 2, "include_dashboard": False})
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_mimii_tree(
        tmp_path_factory.mktemp("engine") / "d", machines=("fan",), ids=("00", "02"), n_normal=6, n_anomalous=2, seconds=2.0
    )
    bad = root / "6dB_fan" / "fan" / "id_00" / "normal" / "00000099.wav"
    bad.write_bytes(b"RIFF this is not audio")
    return root


def _clips(data):
    from humwatch.data import load_dataset

    return load_dataset(data)


def _embed(engine, clips, cache, on_bad="skip", seed=0):
    spec = BackboneSettings(backbone="ast", weights="none", backbone_config=TINY_AST)
    reader = ClipReader(AUDIO, on_bad, progress=False)
    bb = Context(audio=AUDIO, seed=seed).backbone(spec)
    return engine.embed(clips, bb, cache_dir=cache, batch_size=3, reader=reader), reader


# -- without Ray -------------------------------------------------------------------------------------------
def test_engine_choice_and_options():
    assert ENGINES == ("local", "ray") and isinstance(get_engine(), LocalEngine)
    assert isinstance(Runtime().engine, LocalEngine)
    with pytest.raises(ConfigError, match="unknown engine 'spark'"):
        get_engine("spark")
    with pytest.raises(ConfigError, match="--ray-address applies to --engine ray"):
        get_engine("local", "ray://head:10001")
    with pytest.raises(ConfigError, match="ray workers"):
        RayEngine(workers=0)
    with pytest.raises(ConfigError, match="CPUs per ray worker"):
        RayEngine(cpus_per_worker=0)


def test_missing_ray_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"--engine ray needs Ray: pip install 'ray\[data\]"):
        get_engine("ray")


def test_a_workers_error_comes_back_as_the_same_one_line_error():
    class Wrapped(Exception):
        def __init__(self, cause):
            super().__init__("ray.exceptions.RayTaskError: long\ntraceback")
            self.cause = cause

    e = _unwrap(Wrapped(Wrapped(AudioError("x.wav: not an audio file"))))
    assert isinstance(e, AudioError) and str(e) == "x.wav: not an audio file"
    e = _unwrap(RuntimeError("Traceback...\n  humwatch.errors.ConfigError: weights /w: no such file or folder\n"))
    assert isinstance(e, ConfigError) and str(e) == "weights /w: no such file or folder"
    assert str(_unwrap(RuntimeError("node died\nmore"))) == "ray: node died"


# -- Ray, local cluster of 2 CPUs ------------------------------------------------------------------------
def test_embeddings_on_ray_equal_local_and_a_cached_rerun_builds_nothing(ray_engine, data, tmp_path):
    clips = _clips(data)
    local, lr = _embed(LocalEngine(), clips, tmp_path / "c1")
    remote, rr = _embed(ray_engine, clips, tmp_path / "c2")
    assert [c.path for c in remote.clips] == [c.path for c in local.clips]  # same clips, same order
    np.testing.assert_allclose(remote.X, local.X, atol=1e-6)
    assert remote.skipped == local.skipped == lr.skipped == rr.skipped and len(rr.skipped) == 1
    assert remote.stats["computed"] == local.stats["computed"] == len(clips) - 1
    assert remote.stats["workers_built"] >= 1
    again, _ = _embed(ray_engine, clips, tmp_path / "c2")  # the cache the workers filled
    assert again.stats["workers_built"] == 0, "a fully cached rerun built a network in a worker"
    assert again.stats["cache_hits"] == len(clips) - 1 and again.stats["computed"] == 0
    np.testing.assert_array_equal(again.X, remote.X)


def test_bad_files_raise_the_same_error_and_workers_refuse_another_backbone(ray_engine, data, tmp_path):
    clips = [c for c in _clips(data) if "id_00/normal" in c.path][-3:]  # the bad clip is the last of them
    with pytest.raises(AudioError) as local:
        _embed(LocalEngine(), clips, None, on_bad="error")
    with pytest.raises(AudioError) as remote:
        _embed(ray_engine, clips, None, on_bad="error")
    assert str(remote.value) == str(local.value) and "00000099.wav" in str(remote.value)
    spec = BackboneSettings(backbone="ast", weights="none", backbone_config=TINY_AST)
    bb = Context().backbone(spec)
    bb.recipe = {**bb.recipe, "seed": 1}  # a worker would build another network than the driver's
    with pytest.raises(ConfigError, match="ray worker: backbone ast here is not the driver's"):
        ray_engine.embed(clips[:2], bb, reader=ClipReader(AUDIO, progress=False))


def _scores(run_dir):
    with open(Path(run_dir) / "scores.csv", newline="") as f:
        return [(r["file"], float(r["score"])) for r in csv.DictReader(f)]


@pytest.mark.parametrize(
    "method,settings",
    [
        (
            "embed-detect",
            {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST, "detector": "knn", "detector_params": {"n_neighbors": 2}},
        ),
        ("autoencoder", {"epochs": 2}),
    ],
)
def test_a_run_on_ray_writes_what_the_local_run_writes(ray_engine, data, tmp_path, method, settings):
    def cfg():
        return RunConfig(str(data), method, dict(settings), skip_bad=True, cache_dir=str(tmp_path / "cache"))

    local = run(cfg(), tmp_path / "local", progress=False)
    remote = run(cfg(), tmp_path / "ray", progress=False, engine=ray_engine)
    a, b = _scores(tmp_path / "local"), _scores(tmp_path / "ray")
    assert [f for f, _ in a] == [f for f, _ in b]
    np.testing.assert_allclose([s for _, s in b], [s for _, s in a], rtol=1e-5)
    assert [(r["machine_id"], r["n_normal"], r["n_anomalous"]) for r in remote.rows] == [
        (r["machine_id"], r["n_normal"], r["n_anomalous"]) for r in local.rows
    ]
    np.testing.assert_allclose([r["auc"] for r in remote.rows], [r["auc"] for r in local.rows])
    assert remote.skipped == local.skipped
    assert json.loads((tmp_path / "ray" / "results.json").read_text())["engine"].startswith("ray")


def test_cli_score_on_ray_equals_local(ray_engine, data, tmp_path):
    from humwatch.cli import main

    def cli(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        assert e.value.code in ((0, 1) if argv[0] == "score" else (0,))  # score: 1 when something alarms

    fan = data / "6dB_fan" / "fan"
    cli(
        "fit",
        "--data",
        str(fan),
        "--skip-bad",
        "--out",
        str(tmp_path / "mon"),
        "--backbone",
        "ast",
        "--weights",
        "none",
        "--backbone-config",
        json.dumps(TINY_AST),
        "--detector",
        "knn",
        "--detector-params",
        '{"n_neighbors": 2}',
        "--cache",
        str(tmp_path / "cache"),
        "-q",
        "--threshold-method",
        "percentile",
        "--false-alarm-rate",
        "0.5",
    )
    from humwatch.audio import write_audio

    long = tmp_path / "long.wav"  # a 25 s recording: scored as windows (0, 10, 15 s with the default hop)
    write_audio(long, (0.1 * np.sin(np.arange(25 * 16000) * 0.05)).astype(np.float32), 16000)
    files = [str(fan / "id_00" / "abnormal"), str(fan / "id_00" / "normal"), str(long)]
    cli("score", str(tmp_path / "mon"), *files, "--out", str(tmp_path / "local.csv"), "-q", "--skip-bad", "--windows")
    cli("score", str(tmp_path / "mon"), *files, "--out", str(tmp_path / "ray.csv"), "-q", "--skip-bad", "--windows", "--engine", "ray")
    with open(tmp_path / "local.csv") as a, open(tmp_path / "ray.csv") as b:
        local, remote = list(csv.DictReader(a)), list(csv.DictReader(b))
    key = [(r["file"], r["start"], r["decision"]) for r in local]
    assert [(r["file"], r["start"], r["decision"]) for r in remote] == key
    assert len(local) > 9 and sum(r["file"] == str(long) for r in local) > 1
    np.testing.assert_allclose([float(r["score"]) for r in remote], [float(r["score"]) for r in local], rtol=1e-5)


def test_compare_on_ray_ranks_as_the_local_engine(ray_engine, data, tmp_path):
    """`humwatch compare --engine ray`: in this process, and with each method in its own process joining
    the same Ray (what compare does by default), the leaderboard's AUCs are the local engine's."""
    from humwatch.cli import main
    from humwatch.compare import compare

    specs = ["embed-detect:backbone=features,detector=mahalanobis,standardize=true"]

    def aucs(cmp):
        [rec] = cmp.records
        assert rec["status"] == "ok", rec.get("reason")
        return [rec["mean_auc"], rec["mean_pauc"], *(t["auc"] for _, t in sorted(rec["by_type"].items()))]

    common = dict(skip_bad=True, progress=False)
    local = compare(data, specs, tmp_path / "local", cache_dir=tmp_path / "c1", isolate=False, **common)
    isolated = compare(data, specs, tmp_path / "iso", cache_dir=tmp_path / "c2", isolate=True, engine=ray_engine, **common)
    np.testing.assert_allclose(aucs(isolated), aucs(local), rtol=1e-6)
    assert isolated.meta["engine"].startswith("ray")
    run_doc = json.loads((tmp_path / "iso" / "runs" / "features-mahalanobis" / "results.json").read_text())
    assert run_doc["engine"].startswith("ray (")  # the method's own process ran on the Ray
    with pytest.raises(SystemExit) as e:
        main(
            [
                "compare",
                "--data",
                str(data),
                "--methods",
                specs[0],
                "--out",
                str(tmp_path / "cli"),
                "--skip-bad",
                "--cache",
                str(tmp_path / "c3"),
                "--in-process",
                "--engine",
                "ray",
                "-q",
            ]
        )
    assert e.value.code == 0
    assert json.loads((tmp_path / "cli" / "compare.json").read_text())["engine"].startswith("ray")
    cli_rec = json.loads((tmp_path / "cli" / "methods" / "features-mahalanobis.json").read_text())
    np.testing.assert_allclose(cli_rec["mean_auc"], aucs(local)[0], rtol=1e-6)
    assert json.loads((tmp_path / "cli" / "runs" / "features-mahalanobis" / "results.json").read_text())["engine"].startswith("ray")
