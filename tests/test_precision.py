"""--precision auto (bf16 only where the hardware does it natively) and lazy backbones (a fully cached
rerun builds no network)."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_mimii_tree

from humwatch.audio import AudioSettings, write_audio
from humwatch.data.clips import Clip
from humwatch.embed import embed_clips
from humwatch.errors import ConfigError
from humwatch.methods import BackboneSettings, Context
from humwatch.models import LazyBackbone, create_backbone, plan_backbone, resolve_precision
from humwatch.models import lazy as lazy_mod
from humwatch.models import precision as P
from humwatch.reader import ClipReader

TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_length=128)
TINY_RX = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8)
AUDIO = AudioSettings(seconds=1.0)


def _clips(folder, n, start=0):
    folder = Path(folder)
    out = []
    for i in range(start, start + n):
        t = np.arange(16000) / 16000
        y = 0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.05 * np.random.default_rng(i).standard_normal(t.size)
        write_audio(folder / f"c{i}.wav", y.astype(np.float32))
        out.append(Clip(str(folder / f"c{i}.wav"), "fan", "id_00", 0))
    return out


# -- precision auto ----------------------------------------------------------------------------------------
def test_auto_is_bf16_only_with_native_bf16(monkeypatch):
    monkeypatch.delenv(P.ENV, raising=False)
    monkeypatch.setattr("humwatch.runinfo.cpu_bf16_flags", lambda: [])
    assert resolve_precision("auto", "cpu") == "fp32"  # an AVX2-only CPU: bf16 would be emulated
    monkeypatch.setattr("humwatch.runinfo.cpu_bf16_flags", lambda: ["avx512_bf16"])
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "mps") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setenv(P.ENV, "0")  # the override wins over the flags
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setenv(P.ENV, "1")
    monkeypatch.setattr("humwatch.runinfo.cpu_bf16_flags", lambda: [])
    assert resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'.*auto, fp32, bf16"):
        resolve_precision("fp16")


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    import humwatch.runinfo as R

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(fake if f == "/proc/cpuinfo" else f, *a, **k))
    assert R.cpu_model() == "Test CPU"
    assert R.cpu_bf16_flags() == ["avx512_bf16"]
    assert R.environment()["machine"]["cpu_bf16"] == ["avx512_bf16"]
    fake.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # Arm
    assert R.cpu_bf16_flags() == ["bf16"]


def test_auto_is_resolved_in_create_backbone_and_keyed_by_what_it_became(monkeypatch):
    monkeypatch.setenv(P.ENV, "1")
    bb16 = create_backbone("ast", weights="none", config=TINY_AST)  # auto is the default
    assert bb16.precision == "bf16" and bb16.recipe["precision"] == "bf16"
    assert bb16.cache_key == create_backbone("ast", weights="none", precision="bf16", config=TINY_AST).cache_key
    monkeypatch.setenv(P.ENV, "0")
    bb32 = create_backbone("ast", weights="none", precision="auto", config=TINY_AST)
    assert bb32.precision == "fp32" and bb32.cache_key != bb16.cache_key
    assert BackboneSettings().precision == "auto"
    with pytest.raises(ConfigError, match="precision"):
        BackboneSettings(precision="fp16").validate()


def test_a_monitor_fitted_with_auto_keeps_the_precision_it_chose(monkeypatch, tmp_path):
    """Fitted where auto meant bf16, loaded where it means fp32: the monitor still runs in bf16
    (the embeddings its detector and threshold were made for), and records it."""
    from humwatch.calibrate import fit_monitor
    from humwatch.monitor import load_monitor

    clips = _clips(tmp_path / "a", 25)
    settings = {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST, "detector": "knn"}
    monkeypatch.setenv(P.ENV, "1")
    mon, _ = fit_monitor(clips, "embed-detect", settings, audio=AUDIO, progress=False, false_alarm_rate=0.2, threshold_method="percentile")
    mon.save(tmp_path / "mon")
    doc = json.loads((tmp_path / "mon" / "method" / "method.json").read_text())
    assert doc["settings"]["precision"] == "auto" and doc["info"]["precision"] == "bf16"
    want = mon.score_clips(clips, progress=False)[1]
    monkeypatch.setenv(P.ENV, "0")
    again = load_monitor(tmp_path / "mon")
    assert again.method.backbone_.precision == "bf16"
    np.testing.assert_allclose(again.score_clips(clips, progress=False)[1], want, rtol=1e-6)


@pytest.mark.parametrize(
    "method,settings,precision_of",
    [
        (
            "idnet",
            {
                "epochs": 1,
                "epoch_crops": 16,
                "batch_size": 8,
                "outlier_clips": 1,
                "backbone_config": {"n_mels": 32, "width": 0.25, "embedding_dim": 32, "crop_frames": 16},
            },
            lambda m: [m.model_.backbone.precision],
        ),
        (
            "embed-fusion",
            {"backbones": ["features", {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST}], "detector": "knn"},
            lambda m: [bb.precision for bb in m.backbones_],
        ),
    ],
)
def test_new_methods_keep_the_precision_auto_chose(monkeypatch, tmp_path, method, settings, precision_of):
    import humwatch.calibrate
    from humwatch.calibrate import fit_monitor
    from humwatch.monitor import load_monitor

    # tiny random networks on 12 clips need not alarm on loud noise (fit's probe check, tests/test_short_clips.py): not this test's subject
    monkeypatch.setattr(humwatch.calibrate, "probe_scores", lambda m: {})
    clips = _clips(tmp_path / "a", 12)
    monkeypatch.setenv(P.ENV, "1")
    mon, _ = fit_monitor(clips, method, settings, audio=AUDIO, folds=2, progress=False, false_alarm_rate=0.2, threshold_method="percentile")
    assert precision_of(mon.method) == ["bf16"] * len(precision_of(mon.method))
    mon.save(tmp_path / "mon")
    want = mon.score_clips(clips, progress=False)[1]
    monkeypatch.setenv(P.ENV, "0")
    again = load_monitor(tmp_path / "mon")
    assert set(precision_of(again.method)) == {"bf16"}
    np.testing.assert_allclose(again.score_clips(clips, progress=False)[1], want, rtol=1e-5)


def test_run_results_record_the_resolved_precision(monkeypatch, tmp_path):
    from humwatch.pipeline import RunConfig, run

    data = make_mimii_tree(tmp_path / "d", machines=("fan",), ids=("00",), n_normal=10, n_anomalous=2, seconds=2.0)
    monkeypatch.setenv(P.ENV, "1")
    cfg = RunConfig(str(data), "embed-detect", {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST, "detector": "knn"})
    run(cfg, tmp_path / "run", progress=False)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["settings"]["precision"] == "auto" and res["precision"] == "bf16"


# -- lazy backbones ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,config",
    [
        ("ast", TINY_AST),
        ("resnext101_32x8d", TINY_RX),
        ("autoencoder", {}),
        ("features", {}),
        ("idnet", {"n_mels": 32, "width": 0.25, "embedding_dim": 32, "crop_frames": 16}),
    ],
)
def test_the_plan_knows_the_cache_key_of_the_built_backbone(name, config, tmp_path):
    lazy = plan_backbone(name, weights="none", config=config, seed=3)
    assert isinstance(lazy, LazyBackbone) and not lazy.built
    key, dim = lazy.cache_key, lazy.embedding_dim
    built = create_backbone(name, weights="none", config=config, seed=3)
    assert built.cache_key == key and built.embedding_dim == dim
    built.save(tmp_path / "saved")  # weights from a folder: identity from the files, architecture from its JSON
    from_folder = plan_backbone(name, weights=str(tmp_path / "saved"))
    assert not from_folder.built and from_folder.config == built.config
    assert from_folder.cache_key == create_backbone(name, weights=str(tmp_path / "saved")).cache_key
    assert from_folder.embedding_dim == dim
    x = built.frontend.batch([np.zeros(16000 * 10, np.float32) + 0.01])
    np.testing.assert_allclose(lazy.embed(x), built.embed(x), atol=1e-6)
    assert lazy.built and lazy.get() is lazy.get()


def test_a_plan_that_disagrees_with_its_network_is_a_bug(monkeypatch):
    lazy = plan_backbone("ast", weights="none", config=TINY_AST)
    lazy.config = {**lazy.config, "hidden_size": 64}
    with pytest.raises(RuntimeError, match="cache key"):
        lazy.get()


def test_a_fully_cached_rerun_builds_no_network(tmp_path, monkeypatch):
    clips = _clips(tmp_path / "a", 5)
    builds = []
    real = lazy_mod.LazyBackbone.get

    def counting(self):
        if not self.built:
            builds.append(self.name)
        return real(self)

    monkeypatch.setattr(lazy_mod.LazyBackbone, "get", counting)
    spec = BackboneSettings(backbone="ast", weights="none", backbone_config=TINY_AST)
    first = embed_clips(clips, Context().backbone(spec), cache_dir=tmp_path / "c", reader=ClipReader(AUDIO, progress=False))
    assert builds == ["ast"] and first.stats["computed"] == 5
    again = Context().backbone(spec)
    second = embed_clips(clips, again, cache_dir=tmp_path / "c", reader=ClipReader(AUDIO, progress=False))
    assert builds == ["ast"] and not again.built, "the rerun built the network"
    assert second.stats["cache_hits"] == 5 and second.stats["computed"] == 0
    np.testing.assert_array_equal(first.X, second.X)
    third = embed_clips(
        clips + _clips(tmp_path / "b", 1, start=9), again, cache_dir=tmp_path / "c", reader=ClipReader(AUDIO, progress=False)
    )
    assert again.built and third.stats["computed"] == 1  # one clip not cached: built then


def test_cli_embed_rerun_builds_no_network(tmp_path, monkeypatch):
    from humwatch.cli import main

    builds = []
    real = lazy_mod.LazyBackbone.get
    monkeypatch.setattr(lazy_mod.LazyBackbone, "get", lambda self: (builds.append(1) if not self.built else None) or real(self))
    data = tmp_path / "data"
    for i, c in enumerate(_clips(tmp_path / "raw", 4)):
        (data / "normal").mkdir(parents=True, exist_ok=True)
        Path(c.path).rename(data / "normal" / f"c{i}.wav")
    argv = [
        "embed",
        "--data",
        str(data),
        "--backbone",
        "ast",
        "--weights",
        "none",
        "--backbone-config",
        json.dumps(TINY_AST),
        "--cache",
        str(tmp_path / "cache"),
        "-q",
        "--precision",
        "auto",
    ]
    for out in ("e1.npz", "e2.npz"):
        with pytest.raises(SystemExit) as e:
            main(argv + ["--out", str(tmp_path / out)])
        assert e.value.code == 0
    assert len(builds) == 1
    a, b = np.load(tmp_path / "e1.npz"), np.load(tmp_path / "e2.npz")
    np.testing.assert_array_equal(a["X"], b["X"])
