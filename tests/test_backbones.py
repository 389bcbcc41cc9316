"""Backbones: registry, weights sources, embeddings, precision, blocks, saving (tiny models; full size only in
the two slow tests)."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from humwatch.errors import ConfigError, DamagedFileError
from humwatch.models import RANDOM_INIT_BANNER, Backbone, WeightsInfo, create_backbone, list_backbones, register_backbone, registry

TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_length=128)
TINY_RX = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8)
RX = "resnext101_32x8d"


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _one_line(e):
    return "\n" not in str(e.value) and str(e.value)


def _perturb(module, seed=0):
    """Give every parameter/buffer non-default values (random init leaves zeros: class tokens, last BN gammas)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.dim() <= 1 and ("bn" in name or "norm" in name or "downsample.1" in name) and name.endswith("weight"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                t.add_(0.05 * torch.randn(t.shape, generator=g))


@pytest.fixture(scope="module")
def ast_x():
    return np.random.default_rng(0).standard_normal((2, 128, 128)).astype(np.float32)


@pytest.fixture(scope="module")
def rx_x():
    return np.random.default_rng(1).standard_normal((2, 3, 128, 160)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_ast():
    bb = create_backbone("ast", weights="none", config=TINY_AST)
    _perturb(bb.model)
    return bb


@pytest.fixture(scope="module")
def tiny_rx():
    bb = create_backbone(RX, weights="none", config=TINY_RX)
    _perturb(bb.module)
    return bb


# -- registry ----------------------------------------------------------------------------------------
def test_importing_models_is_cheap():
    code = "import sys, humwatch.models; print(sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_lists_builtins_and_rejects_unknown_names():
    names = list_backbones()
    assert {"ast", RX} <= set(names) and names == sorted(names)
    with pytest.raises(ConfigError, match="unknown backbone 'vgg'") as e:
        create_backbone("vgg")
    assert _one_line(e) and "ast" in str(e.value) and RX in str(e.value)


def test_bad_precision_config_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="precision 'fp16'.*fp32, bf16"):
        create_backbone("ast", weights="none", precision="fp16", config=TINY_AST)
    with pytest.raises(ConfigError, match="unknown config key 'depth'"):
        create_backbone("ast", weights="none", config={**TINY_AST, "depth": 3})
    with pytest.raises(ConfigError, match="not a multiple"):
        create_backbone("ast", weights="none", config={**TINY_AST, "num_attention_heads": 5})
    with pytest.raises(ConfigError, match="takes no option 'attention'"):
        create_backbone(RX, weights="none", config=TINY_RX, attention="eager")
    with pytest.raises(ConfigError, match="unknown attention"):
        create_backbone("ast", weights="none", config=TINY_AST, attention="flash")
    with pytest.raises(ConfigError, match="zero-width"):
        create_backbone(RX, weights="none", config={**TINY_RX, "base_width": 4})
    with pytest.raises(ConfigError, match="4 positive integers"):
        create_backbone(RX, weights="none", config={**TINY_RX, "layers": [1, 1]})


def test_register_backbone_adds_a_factory():
    class Dummy(Backbone):
        pass

    @register_backbone("test-dummy")
    def build(*, weights, precision, config, seed, device, width=3):
        mod = torch.nn.Flatten()
        from humwatch.features import get_frontend

        return Dummy(
            name="test-dummy",
            frontend=get_frontend("ae"),
            module=mod,
            embedding_dim=width,
            precision=precision,
            weights=WeightsInfo("none", True, "dummy"),
            config={"width": width},
        )

    @register_backbone("test-minimal")
    def build_minimal(*, weights, precision, config):
        return build(weights=weights, precision=precision, config=config, seed=0, device="cpu")

    try:
        assert create_backbone("test-minimal").embedding_dim == 3  # seed/device left out of its signature
        with pytest.raises(ConfigError, match="takes no option 'seed'"):
            create_backbone("test-minimal", seed=1)
        bb = create_backbone("test-dummy", weights="none", width=4)
        assert bb.embed(np.ones((2, 2, 2))).shape == (2, 4)
        with pytest.raises(ConfigError, match="takes no option 'depth'"):
            create_backbone("test-dummy", depth=2)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("test-dummy")(lambda **kw: None)
        assert "test-dummy" in list_backbones()
    finally:
        registry._FACTORIES.pop("test-dummy", None)
        registry._FACTORIES.pop("test-minimal", None)


# -- AST -----------------------------------------------------------------------------------------------
def test_ast_shapes_frontend_and_pooled_is_mean_of_class_tokens(tiny_ast, ast_x):
    bb = tiny_ast
    assert bb.name == "ast" and bb.embedding_dim == 32 and bb.precision == "fp32"
    assert bb.frontend.name == "ast" and bb.frontend.params == {"max_length": 128}
    e = bb.embed(ast_x)
    assert e.shape == (2, 32) and e.dtype == np.float32
    with torch.no_grad():
        hidden = bb.model(input_values=torch.from_numpy(ast_x)).last_hidden_state
    np.testing.assert_allclose(e, hidden[:, :2].mean(1).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(e, hidden[:, 0].numpy(), atol=1e-3)  # really both tokens, not just CLS
    # the module is differentiable
    t = torch.from_numpy(ast_x).requires_grad_(True)
    bb.module(t).sum().backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match=r"\(B, 128, 128\)"):
        bb.embed(ast_x[0])


def test_full_size_default_frontend_key_is_the_plain_ast_frontend():
    from humwatch.features import get_frontend

    bb = create_backbone("ast", weights="none", config={**TINY_AST, "max_length": 1024})
    assert bb.frontend.key == get_frontend("ast").key


def test_random_init_is_loud_deterministic_and_seeded(ast_x):
    state = torch.random.get_rng_state()
    a = create_backbone("ast", weights="none", config=TINY_AST)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    b = create_backbone("ast", weights="none", config=TINY_AST)
    c = create_backbone("ast", weights="none", config=TINY_AST, seed=1)
    assert a.weights.random_init and a.weights.source == "none"
    assert a.weights.describe().startswith(RANDOM_INIT_BANNER) and "RANDOM INIT" in repr(a)
    np.testing.assert_array_equal(a.embed(ast_x), b.embed(ast_x))
    assert a.cache_key == b.cache_key != c.cache_key
    assert create_backbone("ast", weights="none", config=a.config).cache_key == a.cache_key  # config round-trips
    assert not np.allclose(a.embed(ast_x), c.embed(ast_x))


def test_ast_save_and_load_round_trip_is_identical(tiny_ast, ast_x, tmp_path):
    d = tiny_ast.save(tmp_path / "ast")
    assert {p.name for p in d.iterdir()} == {"model.safetensors", "config.json", "humwatch_backbone.json", "manifest.json"}
    assert json.loads((d / "humwatch_backbone.json").read_text())["backbone"] == "ast"
    bb = create_backbone("ast", weights=str(d))
    np.testing.assert_array_equal(bb.embed(ast_x), tiny_ast.embed(ast_x))
    assert bb.weights.source == f"local:{d.resolve()}" and "saved from none" in bb.weights.describe()
    assert bb.weights.random_init  # saved from a random init: still said out loud
    assert bb.config == tiny_ast.config
    # the folder is plain Hugging Face too
    from transformers import ASTModel

    hf = ASTModel.from_pretrained(str(d))
    with torch.no_grad():
        np.testing.assert_allclose(
            hf(input_values=torch.from_numpy(ast_x)).pooler_output.numpy(), tiny_ast.embed(ast_x), rtol=1e-5, atol=1e-6
        )
    # an AST folder is not a ResNeXt
    with pytest.raises(ConfigError, match="holds a 'ast' backbone"):
        create_backbone(RX, weights=str(d))


def test_ast_loads_the_original_hub_layout_and_drops_the_classifier(tiny_ast, ast_x, tmp_path):
    """The default weights are an ASTForAudioClassification checkpoint in transformers-4 key names;
    built here offline with the same layout (encoder.layer.N.attention.attention.query, classifier.*)."""
    from safetensors.torch import save_file

    rename = [
        ("layers.", "encoder.layer."),
        ("attention.q_proj", "attention.attention.query"),
        ("attention.k_proj", "attention.attention.key"),
        ("attention.v_proj", "attention.attention.value"),
        ("attention.o_proj", "attention.output.dense"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
    ]
    legacy = {}
    for k, v in tiny_ast.model.state_dict().items():
        for a, b in rename:
            k = k.replace(a, b)
        legacy["audio_spectrogram_transformer." + k] = v.clone().contiguous()
    legacy["classifier.dense.weight"] = torch.randn(527, 32)
    legacy["classifier.dense.bias"] = torch.zeros(527)
    d = tmp_path / "hub-layout"
    d.mkdir()
    save_file(legacy, str(d / "model.safetensors"), metadata={"format": "pt"})
    cfg = tiny_ast.model.config.to_dict()
    cfg["architectures"] = ["ASTForAudioClassification"]
    (d / "config.json").write_text(json.dumps(cfg))
    bb = create_backbone("ast", weights=str(d))
    np.testing.assert_array_equal(bb.embed(ast_x), tiny_ast.embed(ast_x))
    assert not bb.weights.random_init and bb.weights.describe().startswith(f"local:{d.resolve()}")


def test_ast_eager_attention_gives_attention_weights_and_same_embeddings(tiny_ast, ast_x, tmp_path):
    d = tiny_ast.save(tmp_path / "ast")
    eager = create_backbone("ast", weights=str(d), attention="eager")
    assert eager.model.config._attn_implementation == "eager" and eager.attention == "eager"
    np.testing.assert_allclose(eager.embed(ast_x), tiny_ast.embed(ast_x), rtol=1e-4, atol=1e-5)
    assert eager.cache_key == create_backbone("ast", weights=str(d)).cache_key  # same numbers, same cache
    with torch.no_grad():
        emb, att = eager.forward_with_attentions(torch.from_numpy(ast_x))
    tokens = 2 + ((128 - 16) // 10 + 1) * ((128 - 16) // 10 + 1)
    assert len(att) == 2 and att[0].shape == (2, 4, tokens, tokens)
    np.testing.assert_allclose(att[0].sum(-1).numpy(), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="eager"):
        tiny_ast.forward_with_attentions(torch.from_numpy(ast_x))


def test_bad_weights_values_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder") as e:
        create_backbone("ast", weights=str(tmp_path / "nope" / "x"), config=TINY_AST)
    assert _one_line(e)
    with pytest.raises(ConfigError, match="hub id like org/name"):
        create_backbone("ast", weights="not a model!", config=TINY_AST)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        create_backbone("ast", weights=str(empty))
    for text, reason in (("{not json", "damaged \\(not readable JSON"), ("[1, 2]", "damaged \\(not a JSON object")):
        (empty / "config.json").write_text(text)
        with pytest.raises(DamagedFileError, match=reason) as e:
            create_backbone("ast", weights=str(empty))
        assert _one_line(e) and "config.json" in str(e.value)
    (empty / "config.json").unlink()
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"junk")
    with pytest.raises(ConfigError, match="must be a folder"):
        create_backbone("ast", weights=str(f))
    with pytest.raises(ConfigError, match="not a readable checkpoint") as e:
        create_backbone(RX, weights=str(f), config=TINY_RX)
    assert _one_line(e)
    txt = tmp_path / "w.txt"
    txt.write_text("x")
    with pytest.raises(ConfigError, match="not a checkpoint"):
        create_backbone(RX, weights=str(txt))


@pytest.mark.parametrize("name", ["ast", RX])
def test_hub_id_offline_fails_fast_with_a_clear_message(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.monotonic()
    for weights in ("default", "humwatch-test/no-such-model"):
        with pytest.raises(ConfigError) as e:
            create_backbone(name, weights=weights)
        msg = str(e.value)
        assert _one_line(e) and "--weights /path/to/dir" in msg and "--weights none" in msg and "HF_HUB_OFFLINE" in msg
    assert time.monotonic() - t < 5


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch):
    from humwatch.models import weights as w

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(w, "hub_offline", lambda: False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    t = time.monotonic()
    with pytest.raises(ConfigError, match="the hub is unreachable.*--weights none"):
        create_backbone("ast", weights="humwatch-test/no-such-model")
    assert time.monotonic() - t < 5


def test_hub_cache_is_used_offline(tiny_rx, rx_x, tmp_path, monkeypatch):
    """A hub id whose files are in the Hugging Face cache loads without network, keyed by its commit."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--humwatch-test--tiny-rx"
    snap = repo / "snapshots" / commit
    tiny_rx.save(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    bb = create_backbone(RX, weights="humwatch-test/tiny-rx")
    assert bb.weights.source == f"hub:humwatch-test/tiny-rx@{commit}"
    np.testing.assert_array_equal(bb.embed(rx_x), tiny_rx.embed(rx_x))


def test_online_fetch_prefers_safetensors_falls_back_to_bin_and_reports_failures(tiny_rx, rx_x, tmp_path, monkeypatch):
    """The online branch, with huggingface_hub's download replaced by a local fake 'hub'."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    from humwatch.models import weights as w

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    snap = tmp_path / "snapshots" / commit
    tiny_rx.save(snap)
    torch.save(dict(tiny_rx.module.state_dict()), snap / "pytorch_model.bin")
    (snap / "model.safetensors").unlink()  # only the .bin: the fallback must find it
    (snap / "manifest.json").unlink()  # a hub snapshot is not sealed by humwatch
    asked = []

    def fake_download(repo_id, filename, *, revision=None, local_files_only=False, **kw):
        asked.append((filename, local_files_only))
        if (snap / filename).is_file():
            return str(snap / filename)
        raise hf_errors.LocalEntryNotFoundError(f"{filename} not found")

    monkeypatch.setattr(w, "hub_offline", lambda: False)
    monkeypatch.setattr(w, "hub_reachable", lambda timeout=w.HUB_PROBE_TIMEOUT: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    bb = create_backbone(RX, weights="humwatch-test/tiny-rx")
    np.testing.assert_array_equal(bb.embed(rx_x), tiny_rx.embed(rx_x))
    assert [f for f, _ in asked] == ["config.json", "model.safetensors", "pytorch_model.bin"]
    assert not any(local for _, local in asked) and bb.weights.source.endswith("@" + commit)

    def broken(*a, **k):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    with pytest.raises(ConfigError, match=r"download failed \(connection reset by peer\).*--weights none") as e:
        create_backbone(RX, weights="humwatch-test/tiny-rx")
    assert _one_line(e)


# -- ResNeXt ---------------------------------------------------------------------------------------------
def test_resnext_shapes_and_frontend(tiny_rx, rx_x):
    assert tiny_rx.frontend.name == "cnn" and tiny_rx.embedding_dim == 256 == tiny_rx.module.num_features
    e = tiny_rx.embed(rx_x)
    assert e.shape == (2, 256) and e.dtype == np.float32 and np.isfinite(e).all()
    with pytest.raises(ConfigError, match="expected a batch"):
        tiny_rx.embed(rx_x[:, :1])


def test_resnext_save_round_trip_and_timm_checkpoint_files(tiny_rx, rx_x, tmp_path):
    ref = tiny_rx.embed(rx_x)
    d = tiny_rx.save(tmp_path / "rx")
    assert {p.name for p in d.iterdir()} == {"model.safetensors", "config.json", "humwatch_backbone.json", "manifest.json"}
    back = create_backbone(RX, weights=str(d))
    np.testing.assert_array_equal(back.embed(rx_x), ref)
    # the folder is sealed: a changed byte of the weights is refused, not silently used
    import shutil

    bad = tmp_path / "rx-changed"
    shutil.copytree(d, bad)
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[-1] ^= 1
    (bad / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="checksum"):
        create_backbone(RX, weights=str(bad))
    assert back.config == tiny_rx.config  # the architecture comes from the folder
    # a timm checkpoint with its ImageNet classifier, as safetensors and as a torch file
    sd = {k: v.contiguous().clone() for k, v in tiny_rx.module.state_dict().items()}  # the module is channels-last
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 256), torch.zeros(1000)
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "rx.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "rx.pth")
    for f in ("rx.safetensors", "rx.pth"):
        bb = create_backbone(RX, weights=str(tmp_path / f), config=TINY_RX)
        np.testing.assert_array_equal(bb.embed(rx_x), ref)
        assert bb.weights.source == f"local:{(tmp_path / f).resolve()}" and not bb.weights.random_init
    # a checkpoint of another architecture is refused in one line
    with pytest.raises(ConfigError, match="do not fit resnext101_32x8d") as e:
        create_backbone(RX, weights=str(tmp_path / "rx.safetensors"), config={**TINY_RX, "channels": [16, 16, 32, 64]})
    assert _one_line(e)


def test_cache_key_tracks_weights_config_precision(tiny_rx, tmp_path):
    d = tiny_rx.save(tmp_path / "rx")
    k1 = create_backbone(RX, weights=str(d)).cache_key
    assert k1 == create_backbone(RX, weights=str(d)).cache_key and k1.startswith(RX + "-")
    assert create_backbone(RX, weights=str(d), precision="bf16").cache_key != k1
    with torch.no_grad():
        tiny_rx.module.conv1.weight[0, 0, 0, 0] += 1.0
    try:
        tiny_rx.save(d)  # same folder, changed content
        assert create_backbone(RX, weights=str(d)).cache_key != k1
    finally:
        with torch.no_grad():
            tiny_rx.module.conv1.weight[0, 0, 0, 0] -= 1.0
    tiny = create_backbone(RX, weights="none", config=TINY_RX)
    assert tiny.cache_key != create_backbone(RX, weights="none", config={**TINY_RX, "stem_width": 16}).cache_key
    assert create_backbone(RX, weights="none", config=tiny.config).cache_key == tiny.cache_key


# -- precision and blocks ----------------------------------------------------------------------------------
def test_bf16_embeddings_are_close_to_fp32(tiny_ast, tiny_rx, ast_x, rx_x, tmp_path):
    for bb, x in ((tiny_ast, ast_x), (tiny_rx, rx_x)):
        d = bb.save(tmp_path / bb.name)
        half = create_backbone(bb.name, weights=str(d), precision="bf16")
        e16, e32 = half.embed(x), bb.embed(x)
        assert e16.dtype == np.float32 and half.precision == "bf16"
        assert not np.array_equal(e16, e32)  # autocast really ran in bf16
        assert _cos(e16, e32).min() > 0.99


def test_blocks_are_ordered_and_cover_every_parameter_once(tiny_ast, tiny_rx):
    expected = {"ast": ["embeddings", "layer0", "layer1", "layernorm"], RX: ["stem", "layer1", "layer2", "layer3", "layer4"]}
    for bb in (tiny_ast, tiny_rx):
        blocks = bb.blocks()
        assert [n for n, _ in blocks] == expected[bb.name]
        ids = [id(p) for _, ps in blocks for p in ps]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in bb.module.parameters()}
        assert all(ps for _, ps in blocks)
    stem = dict(tiny_rx.blocks())["stem"]
    assert {id(p) for p in stem} == {id(p) for p in list(tiny_rx.module.conv1.parameters()) + list(tiny_rx.module.bn1.parameters())}
    emb = dict(tiny_ast.blocks())["embeddings"]
    assert any(p is tiny_ast.model.embeddings.cls_token for p in emb)
    # frozen parameters stay listed (so they can be unfrozen)
    for p in tiny_rx.blocks()[0][1]:
        p.requires_grad_(False)
    try:
        assert len(tiny_rx.blocks()[0][1]) == len(stem)
    finally:
        for p in stem:
            p.requires_grad_(True)


def test_mark_trained_changes_provenance_and_cache_key():
    bb = create_backbone(RX, weights="none", config=TINY_RX)
    key = bb.cache_key
    bb.mark_trained("fine-tuned on fan")
    assert not bb.weights.random_init and "fine-tuned on fan" in bb.weights.describe()
    assert "started from RANDOM INIT" in bb.weights.describe() and bb.cache_key != key


# -- full size (slow) ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_size_ast_on_one_clip(tone_clip):
    bb = create_backbone("ast", weights="none")
    x = bb.frontend.batch([tone_clip])
    assert x.shape == (1, 1024, 128)
    e = bb.embed(x)
    assert e.shape == (1, 768) and bb.embedding_dim == 768 and np.isfinite(e).all()
    assert len(bb.blocks()) == 14 and sum(p.numel() for p in bb.module.parameters()) > 85_000_000


@pytest.mark.slow
def test_full_size_resnext_on_one_clip(tone_clip):
    bb = create_backbone(RX, weights="none")
    x = bb.frontend.batch([tone_clip])
    assert x.shape == (1, 3, 128, 1251)
    e = bb.embed(x)
    assert e.shape == (1, 2048) and bb.embedding_dim == 2048 and np.isfinite(e).all()
    assert sum(p.numel() for p in bb.module.parameters()) > 86_000_000
    assert [len(getattr(bb.module, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
