"""The Python API (humwatch.fit, load_monitor, Monitor.score, the registries): typed results, the
command line's defaults, one-line humwatch errors for bad inputs, and a cheap ``import humwatch``."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import humwatch
from humwatch.data.synth import synthesize
from humwatch.recordings import Result, Scores, Skipped, Window

FIT = dict(seconds=2, false_alarm_rate=0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    synthesize(root / "data", machines=["fan"], ids=["00"], n_normal=12, n_anomalous=2, seconds=2, channels=1, progress=False)
    synthesize(root / "new", machines=["fan"], ids=["00"], n_normal=3, n_anomalous=3, seconds=2, channels=1, seed=1, progress=False)
    return root


@pytest.fixture(scope="module")
def fitted(data):
    return humwatch.fit(data / "data", out=data / "mon", **FIT)


def _files(data, label):
    return sorted((data / "new").rglob(f"{label}/*.wav"))


def _one_line_error(call):
    with pytest.raises(humwatch.HumwatchError) as e:
        call()
    assert "\n" not in str(e.value) and str(e.value)
    return str(e.value)


def test_import_humwatch_is_cheap_and_all_names_are_there():
    code = (
        "import sys, humwatch; assert 'torch' not in sys.modules and 'humwatch.api' not in sys.modules; "
        "names = sorted(humwatch.__all__); [getattr(humwatch, n) for n in names]; "
        "print(json.dumps([names, 'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    names, torch_after = json.loads(out.stdout)
    assert names == [
        "HumwatchError",
        "Monitor",
        "Result",
        "Scores",
        "Skipped",
        "Window",
        "__version__",
        "backbones",
        "detectors",
        "fit",
        "load_monitor",
        "methods",
    ]
    assert not torch_after  # resolving every public name imports no torch either
    with pytest.raises(AttributeError):
        humwatch.no_such_name  # noqa: B018


def test_registries_are_the_command_lines():
    from humwatch.detectors import list_detectors
    from humwatch.methods import list_methods
    from humwatch.models import list_backbones

    assert humwatch.methods() == list_methods() and "embed-detect" in humwatch.methods()
    assert humwatch.detectors() == list_detectors() and "knn-ldn" in humwatch.detectors()
    assert humwatch.backbones() == list_backbones() and "features" in humwatch.backbones()
    # the packages stay packages
    assert humwatch.methods.create_method and humwatch.detectors.create_detector


def test_fit_uses_the_command_lines_default_and_saves(fitted, data):
    from humwatch.methods.embed_detect import WEIGHT_FREE, monitor_defaults

    defaults, _ = monitor_defaults({})
    if defaults != WEIGHT_FREE:
        pytest.skip("AST weights are here: the default is AST")
    assert isinstance(fitted, humwatch.Monitor) and fitted.method.label == "features+knn-ldn"
    doc = json.loads((data / "mon" / "monitor.json").read_text())
    assert doc["threshold"] == fitted.threshold and doc["audio"]["seconds"] == 2


def test_score_gives_typed_results_in_order(fitted, data):
    mon = humwatch.load_monitor(data / "mon")
    files = _files(data, "abnormal") + _files(data, "normal")
    scores = mon.score(files)
    assert isinstance(scores, Scores) and len(scores) == 6 and scores.skipped == ()
    assert [r.name for r in scores] == [str(f) for f in files]
    assert all(isinstance(r, Result) and all(isinstance(w, Window) for w in r.windows) for r in scores)
    assert [r.anomalous for r in scores] == [True] * 3 + [False] * 3
    for r in scores:
        assert r.threshold == mon.threshold and r.anomalous == (r.anomaly_score > r.threshold)
        assert r.anomaly_score == max(w.anomaly_score for w in r.windows)
    # the same numbers as the monitor's own scoring (what `humwatch score` writes)
    from humwatch.data.clips import Clip

    _, want, _ = fitted.score_clips([Clip(str(f), "unknown", "unknown", 0) for f in files], progress=False)
    np.testing.assert_allclose([r.anomaly_score for r in scores], want, rtol=1e-6)
    assert scores[str(files[1])] is scores[1] and scores.anomalous == scores.results[:3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        scores[0].anomalous = False
    # a folder is every audio file below it
    assert [r.name for r in mon.score(data / "new")] == [str(f) for f in sorted((data / "new").rglob("*.wav"))]


def test_a_long_recording_is_scored_window_by_window(fitted, tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "long.wav", 0.1 * rng.standard_normal(5 * 16000), 16000)
    (r,) = fitted.score([tmp_path / "long.wav"])
    assert [(w.start, w.end) for w in r.windows] == [(0.0, 2.0), (2.0, 4.0), (3.0, 5.0)]


def test_bad_recordings_are_one_line_errors_or_skipped_with_reasons(fitted, data, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    good = _files(data, "normal")[0]
    assert "broken.wav" in _one_line_error(lambda: fitted.score([good, bad]))
    some = fitted.score([bad, good, tmp_path / "missing.wav"], skip_bad=True)
    assert [r.name for r in some] == [str(good)]
    assert [s.name for s in some.skipped] == [str(bad), str(tmp_path / "missing.wav")]
    assert all(isinstance(s, Skipped) and s.reason and s.start == 0.0 for s in some.skipped)


@pytest.mark.parametrize(
    "given, words",
    [
        (42, "cannot use int"),
        ([], "no recordings given"),
        (np.zeros(100), "needs its sample rate"),
        ([np.zeros(100)], "needs its sample rate"),
        ({"a": np.zeros(100)}, "a: expected an (array, sample_rate) pair"),
        ({"a": (np.zeros(100), 16000.5)}, "a: expected an (array, sample_rate) pair"),
        ({1: (np.zeros(100), 16000)}, "names must be text"),
        (b"a.wav", "cannot use bytes"),
        ([None], "cannot use NoneType"),
    ],
)
def test_what_score_cannot_use_is_a_one_line_error(fitted, given, words):
    assert words in _one_line_error(lambda: fitted.score(given))


def test_a_recording_given_twice_is_an_error(fitted, data):
    f = _files(data, "normal")[0]
    assert "given twice" in _one_line_error(lambda: fitted.score([f, str(f)]))


def test_fit_and_load_refuse_bad_arguments_in_one_line_before_any_work(data, tmp_path, monkeypatch):
    import humwatch.calibrate

    monkeypatch.setattr(humwatch.calibrate, "fit_monitor", lambda *a, **k: pytest.fail("fitted before checking"))
    folder = data / "data"
    assert "unknown method 'nope'" in _one_line_error(lambda: humwatch.fit(folder, "nope", **FIT))
    assert "method must be" in _one_line_error(lambda: humwatch.fit(folder, 3, **FIT))
    assert "settings must be a mapping" in _one_line_error(lambda: humwatch.fit(folder, settings=[1], **FIT))
    assert "detector" in _one_line_error(lambda: humwatch.fit(folder, settings={"detector": "nope"}, **FIT))
    assert "no_such" in _one_line_error(lambda: humwatch.fit(folder, "embed-detect:no_such=1", **FIT))
    assert "cannot use int" in _one_line_error(lambda: humwatch.fit(42, **FIT))
    assert "channel must be" in _one_line_error(lambda: humwatch.fit(folder, channel="left", **FIT))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("not humwatch's")
    msg = _one_line_error(lambda: humwatch.fit(folder, out=tmp_path / "full", **FIT))
    assert "overwrite" in msg and "--" not in msg
    assert "out must be a folder path" in _one_line_error(lambda: humwatch.fit(folder, out=3, **FIT))
    assert "no such monitor folder" in _one_line_error(lambda: humwatch.load_monitor(tmp_path / "none"))
    assert "directory must be a folder path" in _one_line_error(lambda: humwatch.load_monitor(None))
    assert "runtime must be" in _one_line_error(lambda: humwatch.load_monitor(tmp_path, runtime="tpu"))


def test_fit_takes_a_spec_with_settings_over_it_and_paths_with_clips(data):
    from humwatch.data import load_dataset

    clips = [c for c in load_dataset(data / "data") if not c.is_anomalous]
    paths = [c.path for c in clips]
    a = humwatch.fit(paths, "embed-detect:backbone=features,detector=lof", {"detector": "knn"}, **FIT)
    b = humwatch.fit(clips, "embed-detect", {"backbone": "features", "detector": "knn"}, **FIT)
    assert a.method.label == b.method.label == "features+knn"
    assert a.threshold == pytest.approx(b.threshold, rel=1e-9)


# ------------------------------------------------------------- decoded audio (Clip.from_array: h-runtime)


def test_arrays_score_as_their_files_do(fitted, data):
    files = _files(data, "abnormal")[:1] + _files(data, "normal")[:1]
    by_path = fitted.score(files)
    pairs = [sf.read(f) for f in files]
    by_pair = fitted.score(pairs)
    by_name = fitted.score({"bad": pairs[0], "ok": pairs[1]})
    assert [r.name for r in by_pair] == ["array0", "array1"] and [r.name for r in by_name] == ["bad", "ok"]
    want = [r.anomaly_score for r in by_path]
    np.testing.assert_allclose([r.anomaly_score for r in by_pair], want, rtol=1e-5)
    np.testing.assert_allclose([r.anomaly_score for r in by_name], want, rtol=1e-5)
    assert [r.anomalous for r in by_name] == [True, False]
    # one pair alone, and mixed with a path
    assert fitted.score(pairs[0])[0].name == "array0"
    assert [r.name for r in fitted.score([files[1], pairs[0]])] == [str(files[1]), "array1"]


def test_fit_on_arrays_is_fit_on_their_files(data):
    files = sorted((data / "data").rglob("normal/*.wav"))
    a = humwatch.fit({f"rec{i:02d}": sf.read(f) for i, f in enumerate(files)}, "embed-detect:backbone=features,detector=knn", **FIT)
    b = humwatch.fit(files, "embed-detect:backbone=features,detector=knn", **FIT)
    assert a.threshold == pytest.approx(b.threshold, rel=1e-5)
