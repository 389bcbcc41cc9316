"""The numbers behind the explanation figures (not their pixels): patch geometry, attention
distance arithmetic on hand-made matrices, rollout, class-token maps, Grad-CAM maps on tiny
random-init models, spectrogram axes and the t-SNE of saved embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from humwatch.errors import ConfigError, HumwatchError
from humwatch.explain.attention import (
    PatchGrid,
    attention_rollout,
    class_token_map,
    mean_attention_distance,
    pairwise_distances,
    patch_attention,
    patch_coordinates,
    rollout_map,
    to_input_grid,
)

TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=128)
TINY_CNN = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8)


# ----------------------------------------------------------------------------- geometry


def test_default_ast_grid_is_12_by_101_from_the_model_config():
    from transformers import ASTConfig

    grid = PatchGrid.from_config(ASTConfig())
    assert (grid.f_dim, grid.t_dim, grid.n_patches) == (12, 101, 1212)
    c = grid.coords()
    assert c.shape == (1212, 2)
    # token order is f * t_dim + t; centres at start + 7.5 pixels, strides 10 x 10
    np.testing.assert_allclose(c[0], [7.5, 7.5])
    np.testing.assert_allclose(c[1], [7.5, 17.5])  # next in time
    np.testing.assert_allclose(c[101], [17.5, 7.5])  # next in frequency
    np.testing.assert_allclose(c[-1], [11 * 10 + 7.5, 100 * 10 + 7.5])
    assert c[:, 0].max() < 128 and c[:, 1].max() < 1024


def test_patch_coordinates_follow_other_strides():
    c = patch_coordinates(2, 3, patch_size=4, frequency_stride=6, time_stride=5)
    np.testing.assert_allclose(c, [[1.5, 1.5], [1.5, 6.5], [1.5, 11.5], [7.5, 1.5], [7.5, 6.5], [7.5, 11.5]])
    with pytest.raises(ConfigError):
        patch_coordinates(0, 3)


# ----------------------------------------------------------------------------- attention distance


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_attention_on_self_has_distance_zero():
    coords = patch_coordinates(3, 4)
    attn = np.stack([np.eye(12), np.eye(12)])  # [heads, q, k]
    np.testing.assert_allclose(mean_attention_distance(attn, coords), [0.0, 0.0])


def test_uniform_attention_gives_the_mean_pairwise_distance():
    coords = patch_coordinates(3, 4)
    n = len(coords)
    attn = np.full((1, n, n), 1.0 / n)
    d = pairwise_distances(coords)
    np.testing.assert_allclose(mean_attention_distance(attn, coords), [d.mean()])
    # a 2 x 1 grid with stride 10: half the pairs are 10 apart, so the mean is 5
    two = patch_coordinates(2, 1, patch_size=16, frequency_stride=10, time_stride=10)
    np.testing.assert_allclose(mean_attention_distance(np.full((1, 2, 2), 0.5), two), [5.0])


def test_hand_made_neighbour_attention_and_mixtures():
    coords = patch_coordinates(1, 3, time_stride=10)  # three patches in a row, 10 pixels apart
    right = np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0]], float)  # everyone looks one patch away
    far = np.array([[0, 0, 1], [1, 0, 0], [1, 0, 0]], float)  # 20, 10, 20 pixels
    half = 0.5 * np.eye(3) + 0.5 * right  # half on self, half one patch away
    out = mean_attention_distance(np.stack([right, far, half]), coords)
    np.testing.assert_allclose(out, [10.0, 50.0 / 3.0, 5.0])


def test_class_tokens_are_dropped_and_patch_attention_renormalised():
    coords = patch_coordinates(2, 2)
    n = 4
    attn = np.zeros((1, n + 2, n + 2))
    attn[0, :, :2] = 0.25  # half of every row goes to the two class tokens
    attn[0, :, 2:] = 0.5 / n  # the other half is uniform over the patches
    d = pairwise_distances(coords)
    np.testing.assert_allclose(mean_attention_distance(attn, coords), [d.mean()])
    # without renormalising, attention to the class tokens counts as distance 0
    np.testing.assert_allclose(mean_attention_distance(attn, coords, renormalize=False), [0.5 * d.mean()])
    p = patch_attention(attn, n)
    assert p.shape == (1, n, n)
    np.testing.assert_allclose(p.sum(-1), 1.0)


def test_layers_and_heads_give_a_layers_by_heads_table():
    rng = np.random.default_rng(0)
    coords = patch_coordinates(3, 3)
    attn = _softmax(rng.normal(size=(4, 3, 11, 11)))  # 4 layers, 3 heads, 2 class tokens + 9 patches
    out = mean_attention_distance(attn, coords)
    assert out.shape == (4, 3)
    for layer in range(4):  # the same as asking layer by layer
        np.testing.assert_allclose(out[layer], mean_attention_distance(attn[layer], coords))
    assert (out > 0).all() and (out <= pairwise_distances(coords).max()).all()


def test_bad_attention_shapes_are_config_errors():
    coords = patch_coordinates(2, 2)
    with pytest.raises(ConfigError):
        mean_attention_distance(np.ones((2, 3, 3)), coords)  # fewer tokens than patches
    with pytest.raises(ConfigError):
        mean_attention_distance(np.ones((2, 4, 5)), coords)  # not square


# ----------------------------------------------------------------------------- rollout and maps


def test_rollout_rows_sum_to_one_and_identity_attention_rolls_out_to_identity():
    rng = np.random.default_rng(1)
    attn = _softmax(rng.normal(size=(3, 2, 7, 7)))
    r = attention_rollout(attn)
    assert r.shape == (7, 7)
    np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-12)
    assert (r >= 0).all()
    np.testing.assert_allclose(attention_rollout(list(attn)), r)  # a list of layers, as the model gives them
    np.testing.assert_allclose(attention_rollout(np.broadcast_to(np.eye(5), (2, 3, 5, 5))), np.eye(5))
    # one layer: 0.5 * I + 0.5 * mean over heads (rows already sum to 1)
    one = attn[:1]
    np.testing.assert_allclose(attention_rollout(one), 0.5 * np.eye(7) + 0.5 * one[0].mean(0))
    for fusion in ("max", "min"):
        np.testing.assert_allclose(attention_rollout(attn, head_fusion=fusion).sum(-1), 1.0, atol=1e-12)
    with pytest.raises(ConfigError):
        attention_rollout(attn, head_fusion="median")


def test_class_token_map_puts_the_attended_patch_at_its_grid_place():
    grid = PatchGrid(n_mels=36, max_length=46, patch_size=16, frequency_stride=10, time_stride=10)
    assert (grid.f_dim, grid.t_dim) == (3, 4)
    n = grid.n_patches + 2
    attn = np.full((2, n, n), 1.0 / n)
    target = 2 + 1 * grid.t_dim + 2  # frequency row 1, time column 2
    attn[:, :2, :] = 0.0
    attn[:, :2, target] = 1.0
    m = class_token_map(attn, grid)
    assert m.shape == (3, 4)
    assert m[1, 2] == pytest.approx(1.0) and m.sum() == pytest.approx(1.0)
    r = rollout_map(attention_rollout(attn[None]), grid)
    assert r.shape == (3, 4) and r.sum() == pytest.approx(1.0)


def test_patch_map_lands_on_the_input_pixels():
    grid = PatchGrid(n_mels=35, max_length=55, patch_size=15, frequency_stride=10, time_stride=10)  # centres at integers
    assert (grid.f_dim, grid.t_dim) == (3, 5)
    m = np.arange(15, dtype=float).reshape(3, 5)
    img = to_input_grid(m, grid)
    assert img.shape == (35, 55)  # (mel bins, frames)
    for f in range(3):
        for t in range(5):
            assert img[7 + 10 * f, 7 + 10 * t] == pytest.approx(m[f, t])
    assert img[7, 12] == pytest.approx(0.5)  # halfway between two patch centres in time
    assert img[0, 0] == pytest.approx(m[0, 0]) and img[-1, -1] == pytest.approx(m[-1, -1])  # held at the edges


# ----------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def tiny_ast():
    import torch

    from humwatch.models import create_backbone

    bb = create_backbone("ast", weights="none", config=TINY_AST)  # SDPA by default
    with torch.no_grad():  # random class tokens so their attention is not uniform at layer 1
        g = torch.Generator().manual_seed(0)
        bb.model.embeddings.cls_token.copy_(torch.randn(bb.model.embeddings.cls_token.shape, generator=g))
        bb.model.embeddings.distillation_token.copy_(torch.randn(bb.model.embeddings.distillation_token.shape, generator=g))
    return bb


@pytest.fixture(scope="module")
def tiny_cnn():
    from humwatch.models import create_backbone

    return create_backbone("resnext101_32x8d", weights="none", config=TINY_CNN)


def test_ast_attention_maps_are_on_the_input_grid_in_unit_range(tiny_ast, tone_clip):
    from humwatch.explain.attention import ast_attention_maps, attention_layers, find_ast_model

    x = tiny_ast.frontend(tone_clip)
    assert x.shape == (128, 128)
    att = np.stack(attention_layers(tiny_ast, x))
    grid = PatchGrid.from_config(find_ast_model(tiny_ast).config)
    assert att.shape == (2, 2, grid.n_patches + 2, grid.n_patches + 2)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-4)
    assert tiny_ast.model.config._attn_implementation == "sdpa"  # switched to eager only for the call
    maps = ast_attention_maps(tiny_ast, x)
    assert set(maps) == {"layer 1", "layer 2", "rollout"}
    for name, m in maps.items():
        assert m.shape == grid.input_shape == (128, 128), name
        assert m.dtype == np.float32
        assert m.min() == pytest.approx(0.0) and m.max() == pytest.approx(1.0), name


def test_ast_attention_distances_per_layer_and_head(tiny_ast, tone_clip):
    from humwatch.explain.attention import attention_distances

    x = tiny_ast.frontend(tone_clip)
    d = attention_distances(tiny_ast, [x, x[::-1].copy()])
    grid = PatchGrid.from_config(tiny_ast.model.config)
    assert d.shape == (2, 2)
    assert ((d > 0) & (d < pairwise_distances(grid.coords()).max())).all()
    with pytest.raises(ConfigError):
        attention_distances(tiny_ast, [])


def test_gradcam_maps_match_the_input_shape_in_unit_range(tiny_cnn):
    from humwatch.explain.gradcam import EmbeddingDistanceTarget, gradcam_maps

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 128, 160)).astype(np.float32)
    maps = gradcam_maps(tiny_cnn, x)
    assert set(maps) == {"layer2", "layer4"}
    for name, m in maps.items():
        assert m.shape == (128, 160), name
        assert m.min() >= 0.0 and m.max() == pytest.approx(1.0), name
    # a batch, another block, the distance-from-normal target, frozen weights
    for p in tiny_cnn.module.parameters():
        p.requires_grad_(False)
    try:
        out = gradcam_maps(
            tiny_cnn,
            np.stack([x, x[:, :, ::-1].copy()]),
            layers=["layer3"],
            target=EmbeddingDistanceTarget(np.zeros(tiny_cnn.embedding_dim)),
        )
    finally:
        for p in tiny_cnn.module.parameters():
            p.requires_grad_(True)
    assert out["layer3"].shape == (2, 128, 160)
    assert out["layer3"].min() >= 0.0 and out["layer3"].max() <= 1.0
    with pytest.raises(ConfigError):
        gradcam_maps(tiny_cnn, x, layers=["layer9"])


def test_models_are_found_inside_backbones_and_wrong_ones_refused(tiny_ast, tiny_cnn):
    import torch

    from humwatch.explain.attention import find_ast_model
    from humwatch.explain.gradcam import find_resnet

    assert find_ast_model(tiny_ast) is tiny_ast.model
    assert find_resnet(tiny_cnn) is tiny_cnn.module
    assert find_ast_model(tiny_cnn, required=False) is None
    with pytest.raises(ConfigError):
        find_resnet(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- spectrograms


def test_spectrogram_axes_are_hz_to_nyquist_and_seconds_to_clip_length():
    from humwatch.explain.spectrograms import Panel, spectrogram, spectrogram_figure

    sr, seconds = 16000, 2.0
    t = np.arange(int(sr * seconds)) / sr
    y = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    lin = spectrogram(y, sr, "linear")
    assert lin.freqs[0] == 0 and lin.freqs[-1] == pytest.approx(8000.0)
    assert lin.db.shape == (len(lin.freqs), len(lin.times))
    assert 0 <= lin.times[0] and lin.times[-1] <= seconds
    assert abs(lin.freqs[np.argmax(lin.db.mean(1))] - 1000) < sr / 1024  # the tone sits at 1 kHz
    assert lin.db.max() == pytest.approx(0.0) and lin.db.min() >= -80.0 - 1e-3
    mel = spectrogram(y, sr, "mel")
    assert mel.db.shape[0] == 128 and mel.freqs[-1] == pytest.approx(8000.0)
    assert abs(mel.freqs[np.argmax(mel.db.mean(1))] - 1000) < 100

    fig = spectrogram_figure([[Panel(y, "normal"), Panel(y, "anomalous")]], "linear")
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"][:2]
    for ax in axes:
        assert ax.get_ylim() == pytest.approx((0.0, 8000.0))
        assert ax.get_xlim() == pytest.approx((0.0, seconds))
        assert "Hz" in ax.get_ylabel()
    assert [ax.get_title() for ax in axes] == ["normal", "anomalous"]
    with pytest.raises(ConfigError):
        spectrogram(y, sr, "cqt")


def test_examples_pick_a_normal_and_an_anomalous_test_clip_per_machine():
    from humwatch.explain.run import ClipRef, clip_from_path, pick_examples

    clips = [
        ClipRef(f"/d/{m}/{i}.wav", m, "id_00", lab, split)
        for m in ("fan", "pump")
        for i, (lab, split) in enumerate([(0, "train"), (0, "test"), (1, "test"), (1, "val")])
    ]
    ex = pick_examples(clips)
    assert list(ex) == ["fan", "pump"]
    for m, (normal, anomalous) in ex.items():
        assert (normal.label, anomalous.label) == (0, 1)
        assert normal.split == anomalous.split == "test" and normal.machine_type == m
    # the pair comes from one machine id that has both labels
    mixed = [
        ClipRef("/d/fan/n2.wav", "fan", "id_02", 0, "test"),
        ClipRef("/d/fan/a4.wav", "fan", "id_04", 1, "test"),
        ClipRef("/d/fan/n4.wav", "fan", "id_04", 0, "test"),
    ]
    for seed in range(5):
        normal, anomalous = pick_examples(mixed, seed=seed)["fan"]
        assert normal.machine_id == anomalous.machine_id == "id_04"

    c = clip_from_path("/data/6dB_fan/fan/id_02/abnormal/00000003.wav")
    assert (c.machine_type, c.machine_id, c.label) == ("fan", "id_02", 1)
    c = clip_from_path("/dcase/valve/test/section_00_source_test_normal_0001_a.wav")
    assert (c.machine_type, c.machine_id, c.label) == ("valve", "section_00", 0)
    assert clip_from_path("/x/recording.wav").label is None


# ----------------------------------------------------------------------------- t-SNE


def _write_npz(path, rng, types=("fan", "pump"), n=8, dim=6, anomaly_shift=4.0):
    rows = [(m, f"id_0{k % 2}", int(k >= n - 3)) for m in types for k in range(n)]
    X = rng.standard_normal((len(rows), dim)).astype(np.float32)
    X[[r[2] == 1 for r in rows]] += anomaly_shift
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        X=X,
        path=np.array([f"/d/{m}/{i}/{k}.wav" for k, (m, i, _) in enumerate(rows)]),
        label=np.array([r[2] for r in rows]),
        machine_type=np.array([r[0] for r in rows]),
        machine_id=np.array([r[1] for r in rows]),
        split=np.array(["test"] * len(rows)),
    )
    results = path.parent.parent / "results.json"  # a run is a folder with results.json
    if not results.exists():
        results.write_text('{"rows": []}')
    return X, rows


def test_tsne_reads_the_saved_embeddings_and_builds_no_model(tmp_path, monkeypatch):
    import timm
    import transformers

    import humwatch.models
    from humwatch.explain.run import make_tsne_figures
    from humwatch.explain.tsne import load_embeddings, tsne_2d

    def refuse(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(humwatch.models, "create_backbone", refuse)
    monkeypatch.setattr(transformers.ASTModel, "__init__", refuse)
    monkeypatch.setattr(timm, "create_model", refuse)

    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    X_ast, rows = _write_npz(run / "embeddings" / "ast.npz", rng)
    _write_npz(run / "embeddings" / "resnext101_32x8d.npz", rng, dim=10)
    notes: list[str] = []
    figs, data = make_tsne_figures(run, tmp_path / "out", notes, seed=0)
    assert set(figs) == {"tsne_label", "tsne_machine_id"} and all(p.is_file() for p in figs.values())
    assert list(data["files"]) == ["ast", "resnext101_32x8d"]  # the transformer first
    assert sorted((p["backbone"], p["machine_type"], p["n"]) for p in data["panels"]) == [
        ("ast", "fan", 8),
        ("ast", "pump", 8),
        ("resnext101_32x8d", "fan", 8),
        ("resnext101_32x8d", "pump", 8),
    ]
    # the panel is the t-SNE of exactly that machine type's saved rows
    from humwatch.explain.tsne import tsne_panels

    t = load_embeddings(run / "embeddings" / "ast.npz")
    panel = tsne_panels([t], seed=0).get("ast", "fan")
    np.testing.assert_array_equal(panel.label, [r[2] for r in rows if r[0] == "fan"])
    np.testing.assert_allclose(panel.coords, tsne_2d(X_ast[:8], seed=0), rtol=1e-5, atol=1e-4)


def test_tsne_merges_reproduce_cells_and_refuses_bad_files(tmp_path):
    from humwatch.explain.tsne import concat_tables, find_embedding_files, load_embeddings

    rng = np.random.default_rng(1)
    root = tmp_path / "repro"
    (root / "table3.md").parent.mkdir(parents=True)
    (root / "table3.md").write_text("| row | fan |\n|---|---|\n| ast-lof | 0.9 |\n")
    for m in ("fan", "pump"):
        _write_npz(root / "runs" / f"ast-lof__{m}" / "embeddings" / "ast.npz", rng, types=(m,))
        (root / "runs" / f"ast-lof__{m}" / "results.json").write_text('{"rows": [], "random_init": true}')
    files = find_embedding_files(root)
    assert list(files) == ["ast"] and len(files["ast"]) == 2
    t = concat_tables([load_embeddings(f, "ast") for f in files["ast"]])
    assert sorted(set(t.machine_type)) == ["fan", "pump"] and len(t) == 16 and t.random_init is True

    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((3, 2)), path=np.array(["a", "b", "c"]))
    with pytest.raises(HumwatchError, match="lacks"):
        load_embeddings(bad)
    obj = tmp_path / "obj.npz"
    np.savez(
        obj,
        X=np.zeros((1, 2)),
        path=np.array([{"a": 1}], dtype=object),
        label=np.zeros(1),
        machine_type=np.array(["f"]),
        machine_id=np.array(["i"]),
        split=np.array(["test"]),
    )
    with pytest.raises(HumwatchError):
        load_embeddings(obj)  # pickled objects are never loaded
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(HumwatchError):
        load_embeddings(tmp_path / "junk.npz")
