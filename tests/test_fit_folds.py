"""A monitor's calibration folds without six trainings (humwatch.folds, issue 22 item 3): embed every
window once for a fixed network (the same out-of-fold scores and threshold as a new method per
fold), Mahalanobis held-out distances without the d x d precision, and the folds of a trained
network in parallel processes (the serial run's threshold)."""

import numpy as np
import pytest
from helpers import make_mimii_tree

import humwatch.embed
from humwatch.calibrate import fit_monitor
from humwatch.cli import main
from humwatch.data import load_dataset
from humwatch.data.clips import expand_windows
from humwatch.detectors import create_detector
from humwatch.errors import ConfigError
from humwatch.folds import cross_fit, fold_jobs
from humwatch.methods import Context, create_method
from humwatch.methods.embedding import EmbeddingMethod

FEATURES = {"backbone": "features", "backbone_config": {"n_mels": 16}}
"""160-d statistics: more features than a fold's windows (where the Mahalanobis shortcut applies), cheap to fit."""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_mimii_tree(tmp_path_factory.mktemp("folds"), machines=("fan",), ids=("00",), n_normal=12, n_anomalous=2, seconds=2.0)


@pytest.fixture()
def counted(monkeypatch):
    """How many windows the backbone embedded (cache hits are not embeddings)."""
    seen = {"n": 0}
    real = humwatch.embed.embed_clips

    def counting(clips, backbone, **kw):
        emb = real(clips, backbone, **kw)
        seen["n"] += emb.stats["computed"]
        return emb

    monkeypatch.setattr(humwatch.embed, "embed_clips", counting)
    return seen


def _folds(tree, settings, shortcuts):
    from humwatch.audio import AudioSettings
    from humwatch.calibrate import fold_groups

    audio = AudioSettings(seconds=1.0)
    ctx = Context(audio=audio)
    windows = expand_windows([c for c in load_dataset(tree) if not c.is_anomalous], 1.0, 1.0)
    groups = fold_groups(windows, 5)
    m = create_method("embed-detect", {**FEATURES, **settings}, ctx, title="monitor")
    oof, _ = cross_fit(
        m,
        lambda f: create_method("embed-detect", {**FEATURES, **settings}, ctx, title=f"fold {f}"),
        windows,
        groups,
        [],
        np.zeros(0, int),
        5,
        shortcuts=shortcuts,
    )
    return oof, m, windows


@pytest.mark.parametrize(
    "settings",
    [
        {"detector": "mahalanobis", "standardize": True},
        {"detector": "knn", "detector_params": {"n_neighbors": 2}},
        {"detector": "lof-vote", "per_section": True, "normalize": True},
    ],
)
def test_embedding_once_gives_the_out_of_fold_scores_of_a_new_method_per_fold(tree, counted, settings):
    fast, m_fast, windows = _folds(tree, settings, shortcuts=True)
    assert counted["n"] == len(windows) == 24  # every window embedded once: the folds and the final fit
    counted["n"] = 0
    slow, m_slow, _ = _folds(tree, settings, shortcuts=False)
    assert counted["n"] == 6 * len(windows)  # the generic way: five folds and the final fit, each embedding all
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=0)
    if settings["detector"] != "mahalanobis":  # no shortcut in the detector: the very same numbers
        assert np.array_equal(fast, slow)
    # the final methods are the same too (fitted on the same rows)
    assert m_fast.n_train_ == m_slow.n_train_ == 24
    np.testing.assert_array_equal(m_fast.score(windows[:5]), m_slow.score(windows[:5]))
    np.testing.assert_array_equal(m_fast.far_scores(), m_slow.far_scores())


def test_fit_monitor_threshold_is_the_one_of_the_generic_folds(tree, monkeypatch, counted):
    settings = {**FEATURES, "detector": "mahalanobis", "standardize": True}
    kw = dict(seconds=1.0, false_alarm_rate=0.1, progress=False)
    clips = load_dataset(tree)
    _, fast = fit_monitor(clips, "embed-detect", settings, **kw)
    # the normal windows once, the two anomalous recordings' windows once (reported AUC only), the two probes
    # a monitor must alarm on (loud noise, a pure tone: calibrate.probe_scores)
    assert counted["n"] == 24 + 4 + 2
    monkeypatch.setattr(EmbeddingMethod, "fixed_embedder", property(lambda self: False))
    _, slow = fit_monitor(clips, "embed-detect", settings, **kw)
    assert fast["threshold"] == pytest.approx(slow["threshold"], rel=1e-9)
    assert fast["anomalous_auc"] == slow["anomalous_auc"] and fast["oof_alarm_share"] == slow["oof_alarm_share"]
    assert fast["n_calibration"] == slow["n_calibration"] == 24


def test_a_bad_file_is_skipped_once_on_the_fast_path_as_on_the_generic_one(tmp_path, monkeypatch):
    root = make_mimii_tree(tmp_path, machines=("fan",), ids=("00",), n_normal=8, n_anomalous=0, seconds=2.0)
    bad = next((root / "6dB_fan/fan/id_00/normal").glob("*.wav"))
    bad.write_bytes(b"RIFF not really audio")
    kw = dict(seconds=1.0, false_alarm_rate=0.2, threshold_method="percentile", progress=False, skip_bad=True)
    _, fast = fit_monitor(load_dataset(root), "embed-detect", {**FEATURES, "detector": "knn"}, **kw)
    assert [p for p, _ in fast["skipped"]] == [str(bad)]
    # its one window (an unreadable file's length is unknown) is left out of the calibration and the fit
    assert fast["n_windows"] == 15 and fast["n_calibration"] == fast["n_train"] == 14
    monkeypatch.setattr(EmbeddingMethod, "fixed_embedder", property(lambda self: False))
    _, slow = fit_monitor(load_dataset(root), "embed-detect", {**FEATURES, "detector": "knn"}, **kw)
    assert slow["skipped"] == fast["skipped"] and slow["threshold"] == fast["threshold"]


@pytest.mark.parametrize("n, d, standardize", [(12, 200, True), (30, 64, False), (3, 40, True), (50, 20, True)])
def test_mahalanobis_heldout_scores_are_fit_then_score(n, d, standardize):
    rng = np.random.default_rng(n)
    B = rng.standard_normal((n + 9, 6)) @ rng.standard_normal((6, d)) * 2 + rng.standard_normal((n + 9, d)) * 0.2 + 3
    X, H = B[:n], B[n:]
    want = create_detector("mahalanobis", standardize=standardize).fit(X).anomaly_score(H)
    got = create_detector("mahalanobis", standardize=standardize).heldout_scores(X, H)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    with pytest.raises(ConfigError, match="features"):
        create_detector("mahalanobis").heldout_scores(X, H[:, :-1])


def test_jobs_default_to_the_cores_and_are_checked(tree, tmp_path, capsys):
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert fold_jobs(None, 5) == min(cores, 6)
    assert fold_jobs(16, 5) == 6 and fold_jobs(1, 5) == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="jobs"):
            fold_jobs(bad, 5)
    with pytest.raises(ConfigError, match="jobs"):  # before any audio is read
        fit_monitor(load_dataset(tree), "autoencoder", {"epochs": 1}, seconds=1.0, jobs=0, progress=False)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data", str(tree), "--out", str(tmp_path / "m"), "--method", "autoencoder", "--jobs", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and "--jobs" in err
    assert not (tmp_path / "m").exists()


def test_parallel_folds_give_the_serial_threshold(tmp_path, caplog, monkeypatch):
    """A tiny autoencoder: one worker process and this one share the five folds and the final fit."""
    import logging

    import humwatch.calibrate

    # trained for 2 epochs it does not alarm on loud noise, and fit refuses it (tests/test_short_clips.py): not this test's subject
    monkeypatch.setattr(humwatch.calibrate, "probe_scores", lambda m: {})
    caplog.set_level(logging.INFO, logger="humwatch")
    root = make_mimii_tree(tmp_path, machines=("fan",), ids=("00",), n_normal=6, n_anomalous=0, seconds=2.0)
    bad = next((root / "6dB_fan/fan/id_00/normal").glob("*.wav"))
    bad.write_bytes(b"RIFF not really audio")
    clips = load_dataset(root)
    kw = dict(seconds=1.0, false_alarm_rate=0.2, threshold_method="percentile", progress=False, skip_bad=True)
    mon1, serial = fit_monitor(clips, "autoencoder", {"epochs": 2, "batch_size": 64}, jobs=1, **kw)
    assert "worker processes" not in caplog.text
    mon2, parallel = fit_monitor(clips, "autoencoder", {"epochs": 2, "batch_size": 64}, jobs=2, **kw)
    done = [r.getMessage() for r in caplog.records if "worker processes" in r.getMessage()]
    assert len(done) == 1 and not done[0].startswith("monitor: 0 ")  # a worker trained at least one fold
    assert parallel["threshold"] == pytest.approx(serial["threshold"], rel=1e-6)
    assert parallel["n_calibration"] == serial["n_calibration"] == 10 and parallel["n_train"] == 10
    assert parallel["skipped"] == serial["skipped"] and len(serial["skipped"]) == 1  # skipped once, wherever it was read
    np.testing.assert_allclose(
        mon2.method.score(expand_windows(clips[:2], 1.0, 1.0)), mon1.method.score(expand_windows(clips[:2], 1.0, 1.0)), rtol=1e-6
    )
