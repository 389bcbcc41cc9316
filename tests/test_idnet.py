"""The ID network trained from scratch (idnet), the same objective on a backbone's top (aux-finetune),
the weight-free features backbone: each on tiny settings that fail if training or scoring broke."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from humwatch.audio import AudioSettings
from humwatch.errors import ConfigError, DatasetError
from humwatch.methods import Context, create_method, load_method
from humwatch.runtime import Runtime

SECONDS = 2.0
TINY_NET = {"n_mels": 32, "width": 0.25, "embedding_dim": 32, "crop_frames": 16}
TINY_TRAINING = {"epochs": 8, "epoch_crops": 96, "batch_size": 16, "patience": 8, "backbone_config": TINY_NET}


@pytest.fixture(scope="module")
def two_fans(tmp_path_factory):
    """Two generated fans (two products: different speeds, blades, resonances), 2 s clips."""
    from humwatch.data.synth import synthesize

    clips = synthesize(
        tmp_path_factory.mktemp("fans"),
        machines=["fan"],
        ids=["00", "02"],
        n_normal=20,
        n_anomalous=0,
        snr_db=6.0,
        seed=3,
        seconds=SECONDS,
        channels=1,
        progress=False,
    )
    by_id = {i: [c for c in clips if c.machine_id == i] for i in ("id_00", "id_02")}
    train = [c for i in by_id for c in by_id[i][:14]]
    test = [c for i in by_id for c in by_id[i][14:]]
    return train, test


def ctx(seed=0):
    return Context(audio=AudioSettings(seconds=SECONDS), seed=seed)


def test_idnet_learns_to_tell_two_machines_apart_and_scores_by_section(two_fans, tmp_path):
    train, test = two_fans
    m = create_method("idnet", {**TINY_TRAINING, "scope": "group"}, ctx()).fit(train)
    rep = m.info()["training"]
    assert rep["n_classes"] == 2 and rep["outlier_exposure"] == "none"
    assert rep["train_loss"][-1] < rep["train_loss"][0]  # it learnt something
    # the classifier names the machine of clips it never saw (an untrained head is at chance)
    from humwatch.idtrain import classifier_scores

    emb = m._embed(test)
    own = classifier_scores(m.model_.head, emb.X, [f"fan/{c.machine_id}" for c in emb.clips], m.model_.classes, [])
    other = classifier_scores(
        m.model_.head, emb.X, [f"fan/{'id_02' if c.machine_id == 'id_00' else 'id_00'}" for c in emb.clips], m.model_.classes, []
    )
    assert np.mean(own < other) >= 0.8
    # per-section kNN: a clip of fan 02 presented as fan 00 lies far from fan 00's training embeddings
    swapped = [replace(c, machine_id="id_00" if c.machine_id == "id_02" else "id_02") for c in test]
    r, r2 = m.readings(test), m.readings(swapped)
    from humwatch.metrics import auc

    y = [0] * len(test) + [1] * len(swapped)
    for key in ("score", "classifier"):
        assert auc(y, np.concatenate([r[key], r2[key]])) > 0.9
    m.save(tmp_path / "m")
    back = load_method(tmp_path / "m", ctx())
    np.testing.assert_allclose(back.score(test), m.score(test), rtol=1e-4, atol=1e-5)


def test_one_machine_alone_gets_generated_outliers_and_says_so(two_fans, tmp_path):
    train, test = two_fans
    one = [c for c in train if c.machine_id == "id_00"]
    s = {**TINY_TRAINING, "epochs": 2, "outlier_clips": 2, "scope": "group"}
    m = create_method("idnet", s, ctx()).fit(one, runtime=Runtime(progress=False, cache_dir=str(tmp_path)))
    assert m.info()["outlier_exposure"].startswith("generated: 16 clips of 8 machines")
    assert m.info()["training"]["n_classes"] == 9
    assert np.isfinite(m.score(test)).all()
    with pytest.raises(DatasetError, match="two classes"):
        create_method("idnet", {**s, "outlier_exposure": "off"}, ctx()).fit(one)


def test_one_network_per_run_uses_the_other_machines_of_the_run(two_fans):
    train, _ = two_fans
    c = ctx()
    c.run_clips = [replace(x, split="train") for x in train]
    a = create_method("idnet", {**TINY_TRAINING, "epochs": 1}, c, title="a").fit([x for x in train if x.machine_id == "id_00"])
    b = create_method("idnet", {**TINY_TRAINING, "epochs": 1}, c, title="b").fit([x for x in train if x.machine_id == "id_02"])
    assert a.model_ is b.model_ and a.info()["training"]["n_classes"] == 2  # trained once, shared
    g = Context(audio=c.audio, run_clips=c.run_clips)
    one = create_method("idnet", {**TINY_TRAINING, "epochs": 1, "scope": "group"}, g).fit([x for x in train if x.machine_id == "id_00"])
    assert one.info()["outlier_exposure"].startswith("data: 14 clips of 1 other machines")


def test_idnet_settings_are_checked_before_any_work():
    from humwatch.methods import method_settings

    with pytest.raises(ConfigError, match="idnet: score must be one of knn, classifier"):
        method_settings("idnet", {"score": "vote"})
    with pytest.raises(ConfigError, match="sub_centers"):
        method_settings("idnet", {"sub_centers": 0})


def test_aux_finetune_trains_a_random_tiny_backbone_on_the_id_task(two_fans, tmp_path):
    from humwatch.models import TINY_CONFIGS

    train, test = two_fans
    s = {
        "backbone": "resnext101_32x8d",
        "weights": "none",
        "backbone_config": TINY_CONFIGS["resnext101_32x8d"],
        "epochs": 1,
        "batch_size": 8,
        "scope": "group",
    }
    m = create_method("aux-finetune", s, ctx()).fit(train)
    info = m.info()
    assert info["random_init"] and "RANDOM INIT" in info["weights"] and info["training"]["trainable_params"] > 0
    before = m.score(test)
    m.save(tmp_path / "aux")
    np.testing.assert_allclose(load_method(tmp_path / "aux", ctx()).score(test), before, rtol=1e-4, atol=1e-5)


def test_features_backbone_statistics_by_hand_and_round_trip(tmp_path):
    from humwatch.models import create_backbone

    bb = create_backbone("features", config={"n_mels": 4, "percentiles": [50], "modulation_hz": [[1.0, 5.0]]})
    assert not bb.weights.random_init and bb.embedding_dim == 4 * 5
    t = np.arange(200) / 100.0
    x = np.zeros((1, 4, 200), np.float32)
    x[0, 0] = 10 * np.sin(2 * np.pi * 2.0 * t)  # band 0 pulsates at 2 Hz, inside the 1-5 Hz range
    x[0, 1] = -30.0
    e = bb.embed(x).reshape(5, 4)  # statistic-major: mean, std, p50, mean |change|, log power 1-5 Hz
    assert e[0, 1] == pytest.approx(-30) and e[1, 1] == pytest.approx(0, abs=1e-5)
    assert e[1, 0] == pytest.approx(10 / np.sqrt(2), rel=1e-3)
    assert e[4, 0] > e[4, 1] + 5  # the pulsating band has modulation power, the steady one none
    bb.save(tmp_path / "f")
    back = create_backbone("features", weights=str(tmp_path / "f"))
    np.testing.assert_array_equal(back.embed(x), bb.embed(x))
    with pytest.raises(ConfigError, match="modulation_hz"):
        create_backbone("features", config={"modulation_hz": [[10, 90]]})
    torch.manual_seed(0)  # the statistics are deterministic: no weights, no randomness
    np.testing.assert_array_equal(
        create_backbone("features", config={"n_mels": 4, "percentiles": [50], "modulation_hz": [[1.0, 5.0]]}).embed(x), bb.embed(x)
    )


@pytest.mark.parametrize(
    "method, settings",
    [
        ("idnet", {**TINY_TRAINING, "epochs": 1, "outlier_clips": 1}),
        ("embed-fusion", {"backbones": ["features", {"backbone": "features", "backbone_config": {"n_mels": 32}}]}),
        # zscore: with rank fusion this one-epoch autoencoder ranks loud noise among the normal clips, so
        # the fused rank stays under the threshold and the noise probe refuses the monitor (a real finding)
        (
            "score-fusion",
            {"members": ["embed-detect:backbone=features,detector=mahalanobis,standardize=true", "autoencoder:epochs=1"], "how": "zscore"},
        ),
    ],
)
def test_every_new_method_makes_a_monitor(two_fans, tmp_path, method, settings):
    from humwatch.calibrate import fit_monitor
    from humwatch.monitor import Monitor

    train, test = two_fans
    one = [c for c in train if c.machine_id == "id_00"]
    mon, summary = fit_monitor(
        one,
        method,
        settings,
        folds=2,
        seconds=SECONDS,
        false_alarm_rate=0.2,
        threshold_method="gamma",
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    mon.save(tmp_path / "mon")
    back = Monitor.load(tmp_path / "mon")
    kept, scores, _ = back.score_clips(test, progress=False)
    assert len(kept) == len(test) and np.isfinite(scores).all() and summary["threshold"] == back.threshold
