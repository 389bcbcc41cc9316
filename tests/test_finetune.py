"""Supervised fine-tuning (humwatch.finetune): the study's head, frozen blocks, per-block learning
rates, a tiny end-to-end fine-tune, determinism and the save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from humwatch.audio import AudioSettings, write_audio
from humwatch.data.clips import Clip
from humwatch.errors import ConfigError, DatasetError
from humwatch.finetune import FinetuneSettings, backbone_blocks, build_param_groups, finetune, load_finetuned, make_head, save_finetuned
from humwatch.metrics import auc
from humwatch.models import create_backbone

SR = 16000


SECONDS = 1.0
AUDIO = AudioSettings(seconds=SECONDS)
TINY_RESNEXT = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=2, base_width=32, stem_width=8)
TINY_AST = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, max_length=128)


def tiny(name: str, seed: int = 0):
    if name == "ast":
        return create_backbone("ast", weights="none", config=TINY_AST, seed=seed)
    return create_backbone("resnext101_32x8d", weights="none", config=TINY_RESNEXT, seed=seed)


def _signal(label: int, rng: np.random.Generator) -> np.ndarray:
    """Normal: a steady tone with a little noise. Anomalous: the same + loud broadband bursts."""
    t = np.arange(int(SR * SECONDS)) / SR
    f = rng.uniform(400, 500)
    y = 0.3 * np.sin(2 * np.pi * f * t) + 0.005 * rng.standard_normal(t.size)
    if label:
        for start in rng.integers(0, t.size - 800, size=6):
            y[start : start + 800] += 0.4 * rng.standard_normal(800)
    return np.clip(y, -0.99, 0.99).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Clip]:
    """40 one-second clips of fan id_00: train 12+12, val 2+2, test 6+6."""
    root = tmp_path_factory.mktemp("ftdata")
    rng = np.random.default_rng(0)
    out = []
    plan = {"train": (12, 12), "val": (2, 2), "test": (6, 6)}
    for split, (n_norm, n_anom) in plan.items():
        for label, n in ((0, n_norm), (1, n_anom)):
            for k in range(n):
                p = root / f"{split}_{label}_{k:02d}.wav"
                write_audio(p, _signal(label, rng))
                out.append(Clip(str(p), "fan", "id_00", label, split=split))
    return out


def part(clips, split):
    return [c for c in clips if c.split == split]


# ------------------------------------------------------------------------------------------ head


def test_head_is_the_studys_layers_and_shapes():
    head = make_head(48)
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.Dropout, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (48, 256)
    assert head[1].p == pytest.approx(0.1)
    assert (head[3].in_features, head[3].out_features) == (256, 1)
    assert head(torch.zeros(5, 48)).shape == (5, 1)


def test_settings_defaults_and_validation():
    s = FinetuneSettings()
    assert (s.epochs, s.lr, s.batch_size, s.trainable_blocks, s.block_unit, s.precision, s.seed, s.head_hidden, s.dropout) == (
        1,
        1e-3,
        8,
        2,
        "stage",
        "fp32",
        0,
        256,
        0.1,
    )
    with pytest.raises(ConfigError, match="epochs"):
        FinetuneSettings(epochs=0).validate()
    with pytest.raises(ConfigError, match="precision"):
        FinetuneSettings(precision="fp16").validate()
    with pytest.raises(ConfigError, match="lr"):
        FinetuneSettings(lr=-1).validate()
    with pytest.raises(ConfigError, match="block_unit"):
        FinetuneSettings(block_unit="layer").validate()
    with pytest.raises(ConfigError, match="unknown setting.*pos_weight"):
        FinetuneSettings.from_dict({"pos_weight": 3.0})
    assert FinetuneSettings.from_dict({"lr": "1e-3"}).lr == 1e-3  # YAML reads 1e-3 as a string


# ----------------------------------------------------------------------- freezing and rates


def test_resnext_groups_layer4_lr10_layer3_lr100_rest_frozen():
    bb = tiny("resnext101_32x8d")
    head = make_head(bb.embedding_dim)
    s = FinetuneSettings(lr=1e-3, trainable_blocks=2)
    opt = torch.optim.Adam(build_param_groups(bb, head, s), lr=s.lr)
    got = [(g["name"], g["lr"]) for g in opt.param_groups]
    assert got == [("head", 1e-3), ("layer4", pytest.approx(1e-4)), ("layer3", pytest.approx(1e-5))]
    blocks = dict(backbone_blocks(bb))
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    for name in ("stem", "layer1", "layer2"):
        assert all(not p.requires_grad for p in blocks[name])
        assert not any(id(p) in in_groups for p in blocks[name])
    for name in ("layer3", "layer4"):
        assert all(p.requires_grad for p in blocks[name])
    assert {id(p) for p in head.parameters()} <= in_groups


def test_ast_groups_top_layers_with_final_layernorm():
    bb = tiny("ast")
    head = make_head(bb.embedding_dim)
    s = FinetuneSettings(lr=2e-3, trainable_blocks=2)
    opt = torch.optim.Adam(build_param_groups(bb, head, s), lr=s.lr)
    names = [g["name"] for g in opt.param_groups]
    lrs = [g["lr"] for g in opt.param_groups]
    assert names == ["head", "layer2+layernorm", "layer1"]
    assert lrs == [pytest.approx(2e-3), pytest.approx(2e-4), pytest.approx(2e-5)]
    ln = {id(p) for p in bb.model.layernorm.parameters()}
    assert ln <= {id(p) for p in opt.param_groups[1]["params"]}  # the final LayerNorm trains with the top layer
    frozen = list(bb.model.embeddings.parameters()) + list(bb.model.layers[0].parameters())
    assert frozen and all(not p.requires_grad for p in frozen)
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_groups for p in frozen)
    # every backbone parameter is either in exactly one group or frozen
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert all((id(p) in in_groups) == p.requires_grad for p in bb.module.parameters())


def test_head_only_and_too_many_blocks():
    bb = tiny("resnext101_32x8d")
    groups = build_param_groups(bb, make_head(bb.embedding_dim), FinetuneSettings(trainable_blocks=0))
    assert [g["name"] for g in groups] == ["head"]
    assert not any(p.requires_grad for p in bb.module.parameters())
    with pytest.raises(ConfigError, match="trainable_blocks=6.*5 blocks"):
        build_param_groups(bb, make_head(bb.embedding_dim), FinetuneSettings(trainable_blocks=6))


def test_training_changes_trainable_and_keeps_frozen(clips):
    bb = tiny("resnext101_32x8d")
    before_params = {n: p.detach().clone() for n, p in bb.module.named_parameters()}
    before_buffers = {n: b.detach().clone() for n, b in bb.module.named_buffers()}
    train = part(clips, "train")[:4] + part(clips, "train")[-4:]
    # two steps: timm zero-initialises each residual branch's last BatchNorm, so the branch's other
    # weights get a gradient only from the second step on
    res = finetune(bb, train, FinetuneSettings(batch_size=4), audio=AUDIO, progress=False)
    after_params = dict(bb.module.named_parameters())
    after_buffers = dict(bb.module.named_buffers())
    frozen = [n for n in before_params if n.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")]
    trained = [n for n in before_params if n.split(".")[0] in ("layer3", "layer4")]
    assert frozen and trained
    for n in frozen:
        assert torch.equal(before_params[n], after_params[n]), n
    for n in before_buffers:  # frozen blocks run in eval mode: their BatchNorm statistics stay pretrained
        if n.split(".")[0] in ("bn1", "layer1", "layer2"):
            assert torch.equal(before_buffers[n], after_buffers[n]), n
    changed = [n for n in trained if not torch.equal(before_params[n], after_params[n])]
    assert changed == trained
    assert len(res.train_loss) == 1 and np.isfinite(res.train_loss[0])
    assert res.n_train == 8 and res.n_train_anomalous == 4


def test_needs_both_labels(clips):
    normal = [c for c in part(clips, "train") if c.label == 0]
    with pytest.raises(DatasetError, match="normal and anomalous"):
        finetune(tiny("resnext101_32x8d"), normal, audio=AUDIO, progress=False)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(clips):
    settings = FinetuneSettings(epochs=4, lr=3e-3, batch_size=8, seed=0)
    return finetune(tiny("resnext101_32x8d"), part(clips, "train"), settings, val=part(clips, "val"), audio=AUDIO, progress=False)


def test_end_to_end_learns_a_separable_set(clips, trained):
    test = part(clips, "test")
    kept, scores = trained.scorer.score_clips(test)
    assert len(kept) == 12
    assert ((scores >= 0) & (scores <= 1)).all()
    assert auc([c.label for c in kept], scores) > 0.9
    assert trained.train_loss[-1] < trained.train_loss[0]
    assert trained.val["n"] == 4 and np.isfinite(trained.val["loss"]) and trained.val["auc"] >= 0.75
    assert trained.scorer.info["random_init"] is True
    assert "RANDOM INIT" in trained.scorer.info["base_weights"]


def test_deterministic_for_a_seed(clips):
    train = part(clips, "train")[:5] + part(clips, "train")[-5:]
    paths = [c.path for c in part(clips, "test")]
    runs = []
    for seed in (3, 3, 4):
        res = finetune(tiny("ast"), train, FinetuneSettings(epochs=2, batch_size=4, seed=seed), audio=AUDIO, progress=False)
        runs.append((res.train_loss, res.scorer.score_files(paths)))
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=0, atol=1e-6)
    assert runs[0][0] == pytest.approx(runs[1][0], abs=1e-7)
    assert not np.allclose(runs[0][1], runs[2][1], rtol=0, atol=1e-6)  # another seed: another model


def test_save_load_round_trip_gives_identical_scores(clips, trained, tmp_path):
    paths = [c.path for c in part(clips, "test")]
    before = trained.scorer.score_files(paths)
    d = save_finetuned(trained.scorer, tmp_path / "model")
    assert (d / "head.safetensors").is_file() and (d / "finetune.json").is_file()
    assert (d / "backbone" / "model.safetensors").is_file()
    assert not [p for p in d.rglob("*") if p.suffix in (".pkl", ".pt", ".pth", ".bin")]
    loaded = load_finetuned(d)
    after = loaded.score_files(paths)
    np.testing.assert_array_equal(before, after)
    assert loaded.settings == trained.scorer.settings
    assert loaded.info["random_init"] is True  # the base was random: still said after loading
    assert loaded.audio == AUDIO


def test_bf16_autocast_scores_close_to_fp32(clips, trained):
    paths = [c.path for c in part(clips, "test")][:4]
    fp32 = trained.scorer.score_files(paths)
    trained.scorer.settings.precision = "bf16"
    try:
        bf16 = trained.scorer.score_files(paths)
    finally:
        trained.scorer.settings.precision = "fp32"
    assert np.isfinite(bf16).all()
    np.testing.assert_allclose(bf16, fp32, atol=0.1)


def test_load_rejects_a_folder_without_model(tmp_path):
    with pytest.raises(ConfigError, match="finetune.json"):
        load_finetuned(tmp_path)


# ------------------------------------------------------------------------------ pipeline method


def test_bottleneck_reading_trains_the_top_two_bottlenecks_of_layer4():
    """block_unit="bottleneck": the study's "bottleneck layer 3" (layer4.2) at lr/10 and "bottleneck
    layer 2" (layer4.1) at lr/100; every other parameter frozen, far fewer of them trained."""
    cfg = {**TINY_RESNEXT, "layers": [1, 1, 2, 3]}
    bb = create_backbone("resnext101_32x8d", weights="none", config=cfg)
    head = make_head(bb.embedding_dim)
    s = FinetuneSettings(trainable_blocks=2, block_unit="bottleneck")
    groups = build_param_groups(bb, head, s)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-3), ("layer4.2", pytest.approx(1e-4)), ("layer4.1", pytest.approx(1e-5))]
    trainable = {n for n, p in bb.module.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("layer4.2.", "layer4.1.")) for n in trainable)
    assert any(n.startswith("layer4.1.") for n in trainable) and any(n.startswith("layer4.2.") for n in trainable)
    stage = sum(p.numel() for g in build_param_groups(bb, make_head(bb.embedding_dim), FinetuneSettings()) for p in g["params"])
    bottleneck = sum(p.numel() for g in groups for p in g["params"])
    assert bottleneck < stage
    assert not any(n.startswith("layer4.0.") for n in trainable)  # the bottleneck below the two trained is frozen


def test_finetune_method_fits_scores_saves_and_reports_trainable_parameters(clips, tmp_path, capsys):
    from humwatch.methods import Context, create_method, load_method

    ctx = Context(audio=AUDIO)
    m = create_method("finetune", {"backbone": "ast", "weights": "none", "backbone_config": TINY_AST, "epochs": 1}, ctx, title="fan")
    m.fit(part(clips, "train"), val=part(clips, "val"))
    rep = m.info()["training"]
    assert rep["n_train"] == 24 and rep["val"]["n"] == 4
    assert [g["name"] for g in rep["param_groups"]] == ["head", "layer2+layernorm", "layer1"]
    assert rep["trainable_params"] == sum(g["n_params"] for g in rep["param_groups"]) < rep["total_params"]
    assert "parameters trainable (head, layer2+layernorm, layer1)" in capsys.readouterr().err
    assert m.info()["random_init"] is True and "RANDOM INIT" in m.info()["weights"]
    test = part(clips, "test")
    scores = m.score(test)
    assert ((scores >= 0) & (scores <= 1)).all()
    m.save(tmp_path / "model")
    back = load_method(tmp_path / "model")
    np.testing.assert_allclose(back.score(test), scores, atol=1e-6)
    np.testing.assert_allclose(load_finetuned(tmp_path / "model").score_files([c.path for c in test]), scores, atol=1e-6)


def test_finetune_command_end_to_end(tmp_path):
    """`humwatch finetune` on a normal/abnormal folder with a saved tiny AST as --weights."""
    import json

    import typer
    from typer.testing import CliRunner

    from humwatch.commands import finetune_cmd

    root = tmp_path / "pump"
    rng = np.random.default_rng(1)
    for label, sub in ((0, "normal"), (1, "abnormal")):
        for k in range(12):
            write_audio(root / sub / f"{k:02d}.wav", _signal(label, rng))
    weights = tiny("ast").save(tmp_path / "tiny-ast")
    app = typer.Typer()
    app.command("finetune")(finetune_cmd)
    app.command("other")(lambda: None)
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "finetune",
            "--data",
            str(root),
            "--out",
            str(out),
            "--backbone",
            "ast",
            "--weights",
            str(weights),
            "--epochs",
            "2",
            "--save-model",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "finetune" and results["settings"]["epochs"] == 2
    assert results["rows"][0]["n_normal"] == 3 and results["rows"][0]["n_anomalous"] == 3
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["method"] == "finetune" and config["settings"]["trainable_blocks"] == 2
    for name in ("split.csv", "scores.csv", "results.md"):
        assert (out / name).is_file()
    import csv

    with open(out / "scores.csv", newline="") as f:
        saved = {r["file"]: float(r["score"]) for r in csv.DictReader(f)}
    model = load_finetuned(out / "models" / "pump")
    paths = sorted(saved)
    np.testing.assert_allclose(model.score_files(paths), [saved[p] for p in paths], rtol=1e-6)

    # the saved model is a monitor for `humwatch score`: probability of "anomalous", threshold 0.5
    from humwatch.cli import main

    with pytest.raises(SystemExit) as e:
        main(["score", str(out / "models" / "pump"), *paths, "--out", str(tmp_path / "s.csv"), "-q"])
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert e.value.code == (1 if any(r["decision"] == "anomalous" for r in rows) else 0)
    assert [r["file"] for r in rows] == paths
    for r in rows:
        assert float(r["score"]) == pytest.approx(saved[r["file"]], rel=1e-5)
        assert float(r["threshold"]) == 0.5
        assert r["decision"] == ("anomalous" if float(r["score"]) > 0.5 else "normal")
    with pytest.raises(SystemExit) as e:
        main(["score", str(out / "models" / "pump"), paths[0], "--weights", "none"])
    assert e.value.code == 2
